"""Start the agent-runner worker: `python main.py` (or `./run.sh` from anywhere)."""

from worker.app import main

if __name__ == "__main__":
    main()
