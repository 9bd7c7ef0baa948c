"""`python -m services.api` starts the HTTP API."""

from services.api.main import main

main()
