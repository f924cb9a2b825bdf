"""Runs the README quick start as a user would: examples/quickstart.py as the host, then a second
launch with arguments; the host must print them. Arguments: the repository root, and where the
package must be imported from ("site-packages" for an install, the root for an editable one).
Run it from outside the repository, so that the installed package is what is imported."""

import os
import subprocess
import sys
import tempfile

root, expected = sys.argv[1], sys.argv[2]
script = os.path.join(root, "examples", "quickstart.py")
# An id no other process uses, not the example's own, and a key directory of this run's own,
# so that the user's key file is not touched.
app_id = "org.example.ci.QuickStart.%s" % os.urandom(4).hex()
keys = tempfile.TemporaryDirectory()
env = dict(os.environ, PYTHONUNBUFFERED="1", QUICKSTART_APP_ID=app_id,
           XDG_CONFIG_HOME=keys.name, LOCALAPPDATA=keys.name)
env.pop("PYTHONPATH", None)

where = subprocess.run([sys.executable, "-c", "import Socket_Singleton as m; print(m.__file__)"],
                       env=env, capture_output=True, text=True, check=True)
assert expected in where.stdout, (expected, where.stdout)

host = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE,
                        text=True, env=env)
try:
    first = host.stdout.readline()
    assert first.startswith("host on port "), first
    second = subprocess.run([sys.executable, script, "hello", "two words"], env=env, timeout=30,
                            capture_output=True, text=True)
    assert second.returncode == 0, second
    line = host.stdout.readline()
    assert "('hello', 'two words')" in line, line
    print("quick start OK:", line.strip())
finally:
    host.terminate()
    host.wait(30)
    host.stdout.close()
    keys.cleanup()
