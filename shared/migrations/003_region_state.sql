-- Each region's latest check of each service, for the aggregator's status quorum
-- (STATUS_QUORUM): a service is down only when at least half the regions see it down.
-- Written by the aggregator only, under the service's service_state row lock.
CREATE TABLE service_region_state (
    service_id      text NOT NULL,
    region          text NOT NULL,
    last_status     text NOT NULL,
    last_check_id   uuid NOT NULL,
    last_started_at timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, region)
);
