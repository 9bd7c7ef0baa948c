"""recorder: stores every check result (raw tables) and the service catalog from JetStream."""
