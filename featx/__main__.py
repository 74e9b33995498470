import sys

from featx.cli import main

if __name__ == "__main__":  # importing featx.__main__ (a backbone reference, a worker) runs nothing
    sys.exit(main())
