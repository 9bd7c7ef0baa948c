"""`python -m services.recorder`."""

from services.recorder.main import main

if __name__ == "__main__":
    main()
