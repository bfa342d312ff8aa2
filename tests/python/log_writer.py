"""Writes numbered lines to a.log, b.log and c.log in DIR while rotating two of them, as
logging daemons do.

Usage: log_writer.py DIR LINES SECONDS

Each file gets LINES lines (`<file> <n>`) over SECONDS. After a third of them, a.log is renamed
to a.log.1 (a name `*.log` does not match) and two more lines go to the renamed file before a
new a.log is opened; after two thirds, b.log is copied to b-1.log and truncated (copytruncate).
Prints "done" at the end.
"""

import os
import shutil
import sys
import time


def main():
    directory, lines, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    path = lambda name: os.path.join(directory, name)
    files = {name: open(path(f"{name}.log"), "a", buffering=1) for name in "abc"}
    renamed_at, copied_at = lines // 3, 2 * lines // 3
    pause = seconds / lines
    for i in range(lines):
        for name, file in files.items():
            file.write(f"{name} {i}\n")
        if i == renamed_at:
            os.rename(path("a.log"), path("a.log.1"))
        if i == renamed_at + 2:
            files["a"].close()
            files["a"] = open(path("a.log"), "a", buffering=1)
        if i == copied_at:
            shutil.copyfile(path("b.log"), path("b-1.log"))
            os.truncate(path("b.log"), 0)
        time.sleep(pause)
    for file in files.values():
        file.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
