"""An nginx that a benchmark starts on loopback, for bench/run.py and
bench/latency/latency.py: the process side (start, stop, its pids for CPU
accounting, and the connections it accepted, from stub_status). Each
benchmark writes its own nginx.conf, with `pid` in the directory given and a
stub_status at /_status on status_port."""

import os
import shutil
import signal
import subprocess
import time
import urllib.request


class NginxProcess:
    def __init__(self, directory, status_port):
        self.dir = directory
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.pidfile = os.path.join(self.dir, "nginx.pid")
        self.bin = shutil.which("nginx") or "/usr/sbin/nginx"
        self.status_port = status_port

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def cmd(self, *extra):
        return [self.bin, "-p", self.dir, "-c", self.conf, "-e", os.path.join(self.dir, "error.log"), *extra]

    def start(self):
        subprocess.run(self.cmd("-q", "-t"), check=True)
        subprocess.run(self.cmd(), check=True)
        for _ in range(100):
            try:
                self.accepts()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not come up; see " + os.path.join(self.dir, "error.log"))

    def stop(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def pids(self):
        """The master and its workers."""
        try:
            with open(self.pidfile) as f:
                master = int(f.read().strip())
        except (OSError, ValueError):
            return []
        pids = [master]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                            pids.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def accepts(self):
        """Connections nginx has accepted so far (stub_status)."""
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{self.status_port}/_status", timeout=5) as r:
            return int(r.read().decode().splitlines()[2].split()[0])
