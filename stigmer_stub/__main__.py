"""`python -m stigmer_stub` runs the stub."""

from stigmer_stub.app import main

main()
