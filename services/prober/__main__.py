"""`python -m services.prober`."""

from services.prober.main import main

main()
