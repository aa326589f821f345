#!/usr/bin/python3
"""End-to-end: real BitTorrent clients swap a random file through a running Shoal.

DHT, PEX and local peer discovery are off in every client, so peers can only meet
through the tracker. Each scenario seeds with one client, downloads with another,
and compares the bytes. Run with Debian's /usr/bin/python3 (python3-libtorrent).

  clients.py --shoal target/debug/shoal            # all scenarios; exit 1 on any failure
  clients.py --negative-control                    # no tracker: the download must fail
  clients.py --shoal … --cluster --dbserver target/debug/dbserver
                                                   # seeder on node 1, leecher on node 2 (Redis, PostgreSQL)
  clients.py --shoal … --cluster-negative-control  # two nodes sharing no bus: must not meet
  clients.py --shoal … --hybrid                    # qBittorrent (HTTP) and WebTorrent (ws://) seed one
                                                   # torrent: Shoal counts both seeders
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import libtorrent as lt

PIECE = 32 * 1024
SIZE = 1_234_567  # not a multiple of the piece size: the short last piece is checked too


def free_port(kind=socket.SOCK_STREAM):
    """A port free for TCP and UDP alike: clients bind their peer port with both (uTP, UDP
    trackers), and Transmission, finding the UDP half taken, silently never announces over
    UDP (seen once in CI: "UDP: Couldn't bind IPv4 socket")."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, other) as o:
                try:
                    o.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def make_torrent(data_path, announce, suffix=".torrent"):
    """A v1-only single-file torrent (libtorrent 2 would make a hybrid one)."""
    data = open(data_path, "rb").read()
    pieces = b"".join(hashlib.sha1(data[i:i + PIECE]).digest() for i in range(0, len(data), PIECE))
    info = {"name": os.path.basename(data_path), "length": len(data), "piece length": PIECE, "pieces": pieces}
    meta = {"announce": announce, "info": info, "created by": "shoal e2e"}
    path = data_path + suffix
    with open(path, "wb") as f:
        f.write(bencode(meta))
    return path, hashlib.sha1(bencode(info)).hexdigest()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def wait_for(what, check, timeout):
    started = time.time()
    deadline = started + timeout
    while time.time() < deadline:
        if check():
            if time.time() - started > 5:
                print(f"    waited {time.time() - started:.1f}s for {what}")
            return True
        time.sleep(0.25)
    print(f"    timed out after {timeout}s waiting for {what}")
    return False


def stop_process(proc):
    """SIGTERM to the client's process group, SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# --- clients -------------------------------------------------------------------------

class Libtorrent:
    name = "libtorrent"

    def __init__(self, workdir):
        self.port = free_port()
        self.session = lt.session({
            "listen_interfaces": f"127.0.0.1:{self.port}",
            "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            # libtorrent otherwise waits at least 5 minutes between announces.
            "min_announce_interval": 1,
            # TCP only: in trials uTP to Transmission on loopback took twice as long.
            "enable_outgoing_utp": False, "enable_incoming_utp": False,
            "alert_mask": 0,
        }, 0)  # flags 0: no default plugins, so no ut_pex
        self.handle = None
        self.workdir = workdir

    def add(self, torrent, save_path):
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
        params.save_path = save_path
        params.flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
        self.handle = self.session.add_torrent(params)

    def seeding(self):
        st = self.handle.status()
        return st.is_seeding

    def done(self):
        return self.handle.status().is_finished or self.seeding()

    def stop(self):
        self.session.pause()
        del self.session


class Transmission:
    """transmission-cli 3.00. It ignores tracker peers on 127.x, so it only seeds here."""
    name = "transmission"

    def __init__(self, workdir):
        self.port = free_port()
        self.confdir = os.path.join(workdir, "transmission")
        os.makedirs(self.confdir, exist_ok=True)
        with open(os.path.join(self.confdir, "settings.json"), "w") as f:
            json.dump({
                "dht-enabled": False, "pex-enabled": False, "lpd-enabled": False,
                "port-forwarding-enabled": False, "peer-port": self.port,
                "bind-address-ipv4": "127.0.0.1", "rpc-enabled": False,
                "encryption": 1, "speed-limit-up-enabled": False,
            }, f)
        self.proc = None

    def add(self, torrent, save_path):
        self.log = open(os.path.join(self.confdir, "log.txt"), "w")
        self.proc = subprocess.Popen(
            ["transmission-cli", "-g", self.confdir, "-w", save_path, "-p", str(self.port), "-M", torrent],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def seeding(self):
        text = open(os.path.join(self.confdir, "log.txt"), errors="replace").read()
        return "Seeding" in text

    def stop(self):
        stop_process(self.proc)


class QBittorrent:
    """qbittorrent-nox 4.5 driven through its Web API."""
    name = "qbittorrent"

    def __init__(self, workdir):
        self.port = free_port()
        self.webui = free_port()
        self.profile = os.path.join(workdir, "qbt")
        conf = os.path.join(self.profile, "qBittorrent", "config")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "qBittorrent.conf"), "w") as f:
            # Peer sources and the listen address only take effect at start, so they live here.
            f.write("[LegalNotice]\nAccepted=true\n\n"
                    "[BitTorrent]\nSession\\DHTEnabled=false\nSession\\PeXEnabled=false\nSession\\LSDEnabled=false\n"
                    f"Session\\Port={self.port}\nSession\\InterfaceAddress=127.0.0.1\nSession\\Interface=lo\n"
                    "Session\\InterfaceName=lo\n\n"
                    "[Preferences]\nConnection\\UPnP=false\n"
                    f"WebUI\\Port={self.webui}\nWebUI\\Address=127.0.0.1\nWebUI\\LocalHostAuth=false\n"
                    "WebUI\\CSRFProtection=false\nWebUI\\HostHeaderValidation=false\n")
        self.log = open(os.path.join(self.profile, "stdout.txt"), "w")
        self.proc = subprocess.Popen(["qbittorrent-nox", f"--profile={self.profile}", f"--webui-port={self.webui}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.webui}/api/v2"
        if not wait_for("qBittorrent Web API", self._up, 30):
            raise RuntimeError("qbittorrent-nox did not start")
        with urllib.request.urlopen(self.base + "/app/preferences", timeout=5) as r:
            prefs = json.loads(r.read())
        wanted = {"dht": False, "pex": False, "lsd": False, "listen_port": self.port}
        wrong = {k: prefs.get(k) for k, v in wanted.items() if prefs.get(k) != v}
        if wrong:
            raise RuntimeError(f"qBittorrent did not take its settings: {wrong}")

    def _up(self):
        try:
            return urllib.request.urlopen(self.base + "/app/version", timeout=2).status == 200
        except OSError:
            return False

    def _post(self, path, fields=None, files=None):
        boundary = "shoal-e2e-boundary"
        body = b""
        for k, v in (fields or {}).items():
            body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
        for k, (fname, content) in (files or {}).items():
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{fname}\"\r\n"
                     "Content-Type: application/x-bittorrent\r\n\r\n").encode() + content + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.base + path, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def add(self, torrent, save_path):
        with open(torrent, "rb") as f:
            self._post("/torrents/add", {"savepath": save_path}, {"torrents": (os.path.basename(torrent), f.read())})
        wait_for("qBittorrent to list the torrent", lambda: len(self._info()) == 1, 15)

    def _info(self):
        with urllib.request.urlopen(self.base + "/torrents/info", timeout=5) as r:
            return json.loads(r.read())

    def done(self):
        info = self._info()
        return bool(info) and info[0]["progress"] >= 1.0

    def seeding(self):
        return self.done()

    def stop(self):
        stop_process(self.proc)


# --- tracker and scenarios -------------------------------------------------------------

class Shoal:
    def __init__(self, binary, workdir, db=None, cluster=""):
        """`db` defaults to a SQLite file in `workdir`; `cluster` is a [cluster] table."""
        os.makedirs(workdir, exist_ok=True)
        self.udp, self.http, self.api = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        cfg = os.path.join(workdir, "shoal.toml")
        with open(cfg, "w") as f:
            f.write(f'[database]\nurl = "{db or f"sqlite://{workdir}/shoal.db"}"\n'
                    f'[udp]\nbind = ["127.0.0.1:{self.udp}"]\n[http]\nbind = ["127.0.0.1:{self.http}"]\n'
                    f'[api]\nbind = "127.0.0.1:{self.api}"\n'
                    # Short intervals: qBittorrent waits the min interval before re-announcing.
                    '[announce]\ninterval = 5\nmin_interval = 1\npeer_timeout = 60\n' + cluster)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.log = open(os.path.join(workdir, "shoal.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if not wait_for("shoal to answer /health", self._healthy, 30):
            raise RuntimeError("shoal did not start; see " + self.log.name)

    def _healthy(self):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.api}/health", timeout=1).status == 200
        except OSError:
            return False

    def seeders(self, infohash_hex):
        q = urllib.parse.quote(bytes.fromhex(infohash_hex), safe="")
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/scrape?info_hash={q}", timeout=5).read()
        # d5:filesd20:<hash>d8:completei<N>e...
        i = body.find(b"8:completei")
        return int(body[i + 11:body.index(b"e", i + 11)]) if i >= 0 else 0

    def announces(self, proto):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.api}/metrics", timeout=5).read().decode()
        key = f'shoal_requests_total{{protocol="{proto}",action="announce"}} '
        return next(int(l[len(key):]) for l in text.splitlines() if l.startswith(key))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        return self.proc.returncode


CLIENTS = {"libtorrent": Libtorrent, "transmission": Transmission, "qbittorrent": QBittorrent}


def scenario(seeder_kind, leecher_kind, announce_url, shoal, proto, timeout, leech=None, wait_listed=True):
    """Returns True when the leecher ends with the seeder's exact bytes. `leech` is an
    (announce URL, tracker) pair for the leecher when it uses another tracker than the seeder
    (two nodes of a cluster): two .torrent files with the same info dictionary."""
    work = tempfile.mkdtemp(prefix=f"shoal-e2e-{seeder_kind}-{leecher_kind}-")
    seed_dir, leech_dir = os.path.join(work, "seed"), os.path.join(work, "leech")
    os.makedirs(seed_dir)
    os.makedirs(leech_dir)
    data = os.path.join(seed_dir, "payload.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(SIZE))
    torrent, infohash = make_torrent(data, announce_url)
    leech_torrent, leech_tracker = torrent, shoal
    if leech:
        leech_torrent, same = make_torrent(data, leech[0], suffix=".leech.torrent")
        assert same == infohash
        leech_tracker = leech[1]
    before = shoal.announces(proto) if shoal else 0
    before_leech = leech_tracker.announces(proto) if leech_tracker else 0
    seeder = leecher = None
    ok = False
    try:
        seeder = CLIENTS[seeder_kind](os.path.join(work, "s"))
        seeder.add(torrent, seed_dir)
        if not wait_for(f"{seeder_kind} to verify and seed", seeder.seeding, 30):
            return False
        # The leecher starts once the tracker lists the seeder; otherwise its first announce
        # finds an empty swarm and the test measures the client's retry timer.
        # On the leecher's tracker: across nodes this is the seeder's record arriving.
        if not wait_listed:
            time.sleep(3)  # a control: the leecher starts whether or not its tracker lists the seeder
        elif leech_tracker and not wait_for("the leecher's tracker to list the seeder",
                                            lambda: leech_tracker.seeders(infohash) >= 1, 30):
            return False
        leecher = CLIENTS[leecher_kind](os.path.join(work, "l"))
        leecher.add(leech_torrent, leech_dir)
        got = os.path.join(leech_dir, "payload.bin")
        ok = wait_for(f"{leecher_kind} to finish", leecher.done, timeout) and wait_for(
            "the downloaded bytes to match", lambda: os.path.exists(got) and sha256(got) == sha256(data), 10)
        if ok and shoal:
            used = shoal.announces(proto) - before
            if leech:
                by_leech = leech_tracker.announces(proto) - before_leech
                print(f"    node 1 answered {used} {proto} announces (the seeder's), node 2 {by_leech} (the leecher's)")
                ok = used >= 1 and by_leech >= 1
            else:
                print(f"    shoal answered {used} {proto} announces during the run")
                ok = used >= 2
        return ok
    finally:
        for c in (leecher, seeder):
            if c is not None:
                c.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"    kept {work} for inspection")


SCENARIOS = [
    # (seeder, leecher, protocol)
    ("libtorrent", "qbittorrent", "http"),
    ("libtorrent", "qbittorrent", "udp"),
    ("transmission", "libtorrent", "http"),
    ("transmission", "libtorrent", "udp"),
    ("qbittorrent", "libtorrent", "udp"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shoal", help="path to the shoal binary")
    ap.add_argument("--timeout", type=int, default=180, help="seconds a download may take")
    ap.add_argument("--only", help="run only scenarios whose 'seeder->leecher proto' contains this")
    ap.add_argument("--negative-control", action="store_true",
                    help="run one scenario with no tracker listening; succeed only if the download fails")
    ap.add_argument("--cluster", action="store_true",
                    help="two nodes on one Redis and one PostgreSQL: the seeder announces to node 1 only, the leecher to node 2 only")
    ap.add_argument("--cluster-negative-control", action="store_true",
                    help="two nodes that share no bus: the same scenario must fail")
    ap.add_argument("--dbserver", default="target/debug/dbserver", help="testkit's dbserver, for --cluster")
    ap.add_argument("--hybrid", action="store_true",
                    help="qBittorrent over HTTP and WebTorrent (Node) over ws:// seed one torrent; a scrape counts both")
    args = ap.parse_args()

    if args.negative_control:
        dead = f"http://127.0.0.1:{free_port()}/announce"
        print(f"negative control: libtorrent -> libtorrent via {dead} (nothing listens there)")
        if scenario("libtorrent", "libtorrent", dead, None, "http", 20):
            print("FAIL: peers met without a tracker; the end-to-end test would prove nothing")
            return 1
        print("ok: without a tracker the download fails, as it must")
        return 0

    if not args.shoal:
        ap.error("--shoal is required")
    if args.cluster or args.cluster_negative_control:
        return cluster(args)
    if args.hybrid:
        return hybrid(args)
    work = tempfile.mkdtemp(prefix="shoal-e2e-tracker-")
    shoal = Shoal(os.path.abspath(args.shoal), work)
    failures = []
    try:
        for seeder, leecher, proto in SCENARIOS:
            if args.only and args.only not in f"{seeder}->{leecher} {proto}":
                continue
            port = shoal.udp if proto == "udp" else shoal.http
            url = f"{proto}://127.0.0.1:{port}/announce"
            print(f"{seeder} seeds, {leecher} downloads, via {url}")
            started = time.time()
            if scenario(seeder, leecher, url, shoal, proto, args.timeout):
                print(f"    ok in {time.time() - started:.1f}s")
            else:
                failures.append(f"{seeder}->{leecher} {proto}")
                print("    FAILED")
    finally:
        code = shoal.stop()
    if code != 0:
        failures.append(f"shoal exited with {code} on SIGTERM")
    if failures:
        print("end-to-end failures: " + ", ".join(failures) + f"; tracker log in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("all end-to-end scenarios passed")
    return 0


def hybrid(args):
    """One torrent, two kinds of seeders: qBittorrent announcing over HTTP, a WebTorrent peer
    in Node over the WebSocket tracker (two .torrent files, one info dictionary). A scrape
    over HTTP must count two seeders, and each protocol must have been announced over."""
    work = tempfile.mkdtemp(prefix="shoal-e2e-hybrid-")
    ws_port = free_port()
    shoal = Shoal(os.path.abspath(args.shoal), os.path.join(work, "shoal"),
                  cluster=f'[ws]\nbind = ["127.0.0.1:{ws_port}"]\n')
    seed_dir = os.path.join(work, "seed")
    os.makedirs(seed_dir)
    data = os.path.join(seed_dir, "payload.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(SIZE))
    http_torrent, infohash = make_torrent(data, f"http://127.0.0.1:{shoal.http}/announce")
    ws_torrent, same = make_torrent(data, f"ws://127.0.0.1:{ws_port}/announce", suffix=".ws.torrent")
    assert same == infohash
    qbt = node = None
    ok = False
    try:
        qbt = QBittorrent(os.path.join(work, "q"))
        qbt.add(http_torrent, seed_dir)
        if not wait_for("qBittorrent to seed", qbt.seeding, 30):
            return 1
        peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ws", "peer.mjs")
        node = subprocess.Popen(["node", peer, "seed-torrent", f"ws://127.0.0.1:{ws_port}/announce", ws_torrent, seed_dir],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = node.stdout.readline()
        if not line.startswith("seeding"):
            print(f"    the WebTorrent seeder did not start: {line!r}")
            return 1
        ok = wait_for("Shoal to count both seeders", lambda: shoal.seeders(infohash) == 2, 30)
        print(f"    HTTP scrape: {shoal.seeders(infohash)} seeders (qBittorrent over HTTP, WebTorrent over ws://)")
        ok = ok and shoal.announces("http") >= 1 and shoal.announces("ws") >= 1
    finally:
        if qbt is not None:
            qbt.stop()
        if node is not None:
            stop_process(node)
        code = shoal.stop()
    if not ok or code != 0:
        print(f"hybrid torrent: FAILED (shoal exit {code}); kept {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("hybrid torrent: ok, one set of numbers for both kinds of seeders")
    return 0


def cluster(args):
    """Across nodes: node 1 and node 2 share a Redis stream and a PostgreSQL database, and
    each client knows only its own node. The negative control runs two nodes on their own
    SQLite files with no bus: the leecher's node never hears of the seeder."""
    work = tempfile.mkdtemp(prefix="shoal-e2e-cluster-")
    procs, nodes, failures = [], [], []
    try:
        if args.cluster:
            rport = free_port()
            procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL))
            pg = subprocess.Popen([os.path.abspath(args.dbserver), "postgres", "e2e", "--fast"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(pg)
            db = next((l.strip()[4:] for l in pg.stdout if l.startswith("url=")), None)
            if db is None:
                raise RuntimeError("dbserver could not start PostgreSQL")
            for n in (1, 2):
                table = f'[cluster]\nredis_url = "redis://127.0.0.1:{rport}"\nnode_id = "e2e-{n}"\nsecret = "e2e"\n'
                nodes.append(Shoal(os.path.abspath(args.shoal), os.path.join(work, f"n{n}"), db, table))
        else:
            nodes = [Shoal(os.path.abspath(args.shoal), os.path.join(work, f"n{n}")) for n in (1, 2)]
        runs = [("libtorrent", "qbittorrent", "http"), ("transmission", "libtorrent", "udp")]
        if args.cluster_negative_control:
            runs = runs[:1]
        for seeder, leecher, proto in runs:
            urls = [f"{proto}://127.0.0.1:{n.udp if proto == 'udp' else n.http}/announce" for n in nodes]
            print(f"{seeder} seeds via node 1 ({urls[0]}), {leecher} downloads via node 2 ({urls[1]})")
            started = time.time()
            timeout = 20 if args.cluster_negative_control else args.timeout
            ok = scenario(seeder, leecher, urls[0], nodes[0], proto, timeout, leech=(urls[1], nodes[1]),
                          wait_listed=not args.cluster_negative_control)
            if args.cluster_negative_control:
                if ok:
                    failures.append("peers met across two nodes that share no bus")
                else:
                    print("ok: without a shared bus the leecher's node never lists the seeder, as it must")
            elif ok:
                print(f"    ok in {time.time() - started:.1f}s")
            else:
                failures.append(f"{seeder}->{leecher} {proto} across nodes")
                print("    FAILED")
    finally:
        for n in nodes:
            if n.stop() != 0:
                failures.append("a node exited non-zero on SIGTERM")
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.terminate()
            p.wait(30)
    if failures:
        print("end-to-end failures: " + ", ".join(failures) + f"; logs in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("cluster end-to-end passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
