"""A Tkinter program that opens the files later launches pass it.

    python examples/tk_open_files.py notes.txt        # opens a window listing notes.txt
    python examples/tk_open_files.py todo.txt         # (from any directory) adds todo.txt to it
    python examples/tk_open_files.py                  # brings the window to the front

Two rules this shows:

* Observers run on the library's dispatch thread, and Tk may only be touched from the thread
  running ``mainloop()``. So the observer only puts the launch in a queue; the Tk thread
  takes it from there.
* A later launch's relative paths are relative to *its* working directory, which arrives as
  ``launch.cwd``.
"""

from __future__ import annotations

import os
import queue
import sys
import tkinter as tk

from Socket_Singleton import Socket_Singleton

APP_ID = os.environ.get("TK_DEMO_APP_ID", "org.example.demo.TkOpenFiles")


class Viewer:
    def __init__(self, root: tk.Tk) -> None:
        self.root = root
        root.title("Socket_Singleton Tk demo")
        scrollbar = tk.Scrollbar(root, orient="vertical")
        self.files = tk.Listbox(root, width=80, height=12, yscrollcommand=scrollbar.set)
        scrollbar.configure(command=self.files.yview)
        scrollbar.pack(side="right", fill="y")
        self.files.pack(side="left", fill="both", expand=True)
        self.launches: queue.Queue[tuple[str, ...]] = queue.Queue()

    def on_launch(self, launch: tuple[str, ...]) -> None:
        # Dispatch thread: hand over, touch no widget here.
        self.launches.put(launch)

    def poll(self) -> None:
        # Tk thread.
        while True:
            try:
                launch = self.launches.get_nowait()
            except queue.Empty:
                break
            self.open(launch, getattr(launch, "cwd", None) or os.getcwd())
        self.root.after(100, self.poll)

    def open(self, names: tuple[str, ...], cwd: str) -> None:
        for name in names:
            self.files.insert("end", os.path.normpath(os.path.join(cwd, name)))
        # Bring the window forward on every launch, also one without files. (On Windows the
        # launching process allows this; without that, Windows only flashes the taskbar.)
        self.root.deiconify()
        self.root.lift()
        self.root.focus_force()
        self.root.update_idletasks()  # lay the list out, so that it scrolls to its real end
        self.files.see("end")  # the newest file is in view; the scrollbar reaches the others
        print("window shows:", list(self.files.get(0, "end")), flush=True)
        print("in view:", self.in_view(), flush=True)

    def in_view(self) -> list[str]:
        """The entries the list shows without scrolling."""
        rows = range(self.files.index("end"))
        return [self.files.get(row) for row in rows if self.files.bbox(row) is not None]


def main() -> None:
    # deliver_empty: a launch without arguments still means "show yourself".
    with Socket_Singleton(app_id=APP_ID, deliver_empty=True) as app:
        root = tk.Tk()
        viewer = Viewer(root)
        app.trace(viewer.on_launch)
        viewer.open(tuple(sys.argv[1:]), os.getcwd())
        root.after(100, viewer.poll)
        root.mainloop()


if __name__ == "__main__":
    main()
