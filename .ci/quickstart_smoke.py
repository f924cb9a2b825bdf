"""Runs the README quick start as a user would: examples/quickstart.py as host, then a second
launch with arguments; the host must print them. Argument: the repository root. Run it from
outside the repository so the installed package, not the checkout, is imported."""

import os
import subprocess
import sys

root = sys.argv[1]
script = os.path.join(root, "examples", "quickstart.py")
env = dict(os.environ, PYTHONUNBUFFERED="1")
env.pop("PYTHONPATH", None)

host = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True, env=env)
try:
    first = host.stdout.readline()
    assert first.startswith("host on port"), first
    second = subprocess.run([sys.executable, script, "hello", "two words"], env=env,
                            timeout=30, capture_output=True, text=True)
    assert second.returncode == 0, second
    line = host.stdout.readline()
    assert "('hello', 'two words')" in line, line
    where = subprocess.run([sys.executable, "-c", "import Socket_Singleton; print(Socket_Singleton.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert "site-packages" in where, where
    print("quick start OK:", line.strip())
finally:
    host.terminate()
    host.wait(30)
