"""Ready-to-paste mutual TLS for a service page: a server that admits only the callers its
accept list names, and a client that calls it, in Python, Node.js and Go.

Each snippet is a whole program on its own standard library. It reads what the worker delivers
into every workload (``cert.pem``, ``key.pem``, ``ca.pem``, ``accept.txt`` under
``/var/run/stackblaze/tls``) and notices by itself when the kubelet swaps those files in place
(a renewal, a CA rotation, a changed accept list): workloads are not restarted for them.

``tests/domain/test_mtls_snippets.py`` runs every snippet exactly as returned here.
"""

from __future__ import annotations

import re

TLS_DIR = "/var/run/stackblaze/tls"
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

_PYTHON_RELOADING = r'''
class Reloading:
    """A value built from files, built again when they change: the platform swaps them in
    place (a renewed certificate, a CA rotation, a new accept list) and restarts nothing."""

    def __init__(self, build, *paths):
        self.build, self.paths = build, paths
        self.lock, self.stamp, self.value = threading.Lock(), None, None

    def get(self):
        with self.lock:
            try:
                # os.stat follows the symlinks the files are: a swap shows as another inode.
                stamp = [(s.st_ino, s.st_mtime_ns) for s in map(os.stat, self.paths)]
                if stamp != self.stamp:
                    self.value, self.stamp = self.build(), stamp
            except OSError:  # read mid-swap (a new certificate, the old key): keep the last
                if self.value is None:
                    raise
            return self.value
'''

_PYTHON_SERVER = r"""
# @SERVICE@: HTTPS on port @PORT@, for the services its accept list names only (mutual TLS).
# Standard library only: python3 server.py, or python3 -c "<this code>".
import http.server
import os
import signal
import ssl
import sys
import threading

TLS_DIR = os.environ.get("STACKBLAZE_TLS_DIR", "@TLS_DIR@")
CERT, KEY, CA, ACCEPT = (
    os.path.join(TLS_DIR, name) for name in ("cert.pem", "key.pem", "ca.pem", "accept.txt")
)
PORT = @PORT@


@RELOADING@


def tls_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    context.load_verify_locations(CA)  # the project's CA (two of them during a rotation)
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate, no connection
    context.sni_callback = use_current_files
    return context


def use_current_files(ssl_socket, server_name, context):
    # Runs at every handshake: a renewed certificate or a new CA counts from the next one.
    ssl_socket.context = TLS.get()


def accept_list():
    with open(ACCEPT) as lines:
        return [line for line in map(str.strip, lines) if line and not line.startswith("#")]


def accepts(caller):
    # The CA vouches for who the caller is; accept.txt says whether that one may call.
    return any(
        caller == allowed or (allowed.endswith("/*") and caller.startswith(allowed[:-1]))
        for allowed in ACCEPTED.get()
    )


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a peer that connects and says nothing is let go

    def setup(self):
        super().setup()
        self.connection.do_handshake()  # in this connection's thread, not the accept loop

    def do_GET(self):
        names = self.connection.getpeercert().get("subjectAltName", ())
        # Its identity first; a renamed service's old one after it while the old name lives.
        identities = [value for kind, value in names if kind == "URI"]
        caller = identities[0] if identities else ""
        if any(accepts(each) for each in identities):
            self.answer(200, "Hello, %s\n" % caller)
        else:
            who = caller or "A caller without identity"
            self.answer(403, "%s may not call @SERVICE@\n" % who)

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so that stopping waits for the requests under way

    def handle_error(self, request, client_address):
        # A refused handshake (no certificate, another project's CA): one line, no traceback.
        print("%s: %s" % (client_address[0], sys.exc_info()[1]), file=sys.stderr)


TLS = Reloading(tls_context, CERT, KEY, CA)
ACCEPTED = Reloading(accept_list, ACCEPT)
server = Server(("", PORT), Handler)
server.socket = TLS.get().wrap_socket(
    server.socket, server_side=True, do_handshake_on_connect=False
)
# SIGTERM: stop taking connections, finish the requests under way, exit. shutdown() waits for
# serve_forever() to return, so it runs in another thread than this one.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("@SERVICE@: serving HTTPS with mutual TLS on port %d" % PORT, flush=True)
server.serve_forever()
server.server_close()
"""

_PYTHON_CLIENT = r'''
# Call @SERVICE@ with mutual TLS (from @CALLER@, or any service @SERVICE@ accepts).
# Standard library only. Each line read is a path to GET (an empty line: /), each answer is
# printed: echo / | python3 client.py
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request

TLS_DIR = os.environ.get("STACKBLAZE_TLS_DIR", "@TLS_DIR@")
CERT, KEY, CA = (os.path.join(TLS_DIR, name) for name in ("cert.pem", "key.pem", "ca.pem"))
URL = "https://@SERVICE@.internal:@PORT@"


@RELOADING@


def new_tls_context():
    context = ssl.create_default_context(cafile=CA)  # trusts ca.pem only, checks the hostname
    context.load_cert_chain(CERT, KEY)  # who we are, for @SERVICE@'s accept list
    return context


TLS = Reloading(new_tls_context, CERT, KEY, CA)


def tls_context():
    """Our certificate, and the project's CA as the only trust: built again when renewed."""
    return TLS.get()


def call(path="/"):
    """GET from @SERVICE@: (status, body). A refusal (403) is an answer too, not an exception."""
    try:
        with urllib.request.urlopen(URL + path, context=tls_context(), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# httpx:    httpx.get(URL + path, verify=tls_context())
# requests: requests.get(URL + path, cert=(CERT, KEY), verify=CA)  (reads the files each call)

if __name__ == "__main__":
    for line in sys.stdin:
        try:
            status, body = call(line.strip() or "/")
            print(status, body.strip(), flush=True)
        except Exception as error:  # refused at the handshake, unreachable, timed out
            print("error", error, flush=True)
'''

_NODE_STAMP = r"""// fs.statSync follows the symlinks the files are: a swap shows as another inode.
const stamp = (files) =>
  files.map((file) => { const s = fs.statSync(file); return `${s.ino}:${s.mtimeMs}` }).join(' ')
"""

_NODE_SERVER = r"""
// @SERVICE@: HTTPS on port @PORT@, for the services its accept list names only (mutual TLS).
// Node.js alone: node server.js, or node -e "<this code>".
const fs = require('fs')
const https = require('https')
const path = require('path')

const TLS_DIR = process.env.STACKBLAZE_TLS_DIR || '@TLS_DIR@'
const PORT = @PORT@
const TLS_FILES = ['cert.pem', 'key.pem', 'ca.pem'].map((name) => path.join(TLS_DIR, name))
const ACCEPT = path.join(TLS_DIR, 'accept.txt')

@STAMP@

function tlsOptions() {
  const [cert, key, ca] = TLS_FILES.map((file) => fs.readFileSync(file))
  return { cert, key, ca } // ca: the project's CA (two of them during a rotation)
}

function readAccepted() {
  return fs.readFileSync(ACCEPT, 'utf8').split('\n').map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
}

let seen = { tls: stamp(TLS_FILES), accept: stamp([ACCEPT]) }
let accepted = readAccepted()

// The CA vouches for who the caller is; accept.txt says whether that one may call.
const accepts = (caller) => accepted.some((allowed) =>
  caller === allowed || (allowed.endsWith('/*') && caller.startsWith(allowed.slice(0, -1))))

const server = https.createServer(
  { ...tlsOptions(), requestCert: true, rejectUnauthorized: true }, // no certificate, no connection
  (req, res) => {
    const names = (req.socket.getPeerCertificate().subjectaltname || '').split(', ')
    // Its identity first; a renamed service's old one after it while the old name lives.
    const identities = names.filter((name) => name.startsWith('URI:')).map((name) => name.slice(4))
    const caller = identities[0] || ''
    const ok = identities.some(accepts)
    res.writeHead(ok ? 200 : 403, { 'Content-Type': 'text/plain; charset=utf-8' })
    const who = caller || 'A caller without identity'
    res.end(ok ? `Hello, ${caller}\n` : `${who} may not call @SERVICE@\n`)
  })

// The platform renews the certificate, rotates the CA and edits accept.txt by swapping the
// files in place, without a restart: look once a second, use what changed from then on.
setInterval(() => {
  try {
    const now = { tls: stamp(TLS_FILES), accept: stamp([ACCEPT]) }
    if (now.tls !== seen.tls) server.setSecureContext(tlsOptions())
    if (now.accept !== seen.accept) accepted = readAccepted()
    seen = now
  } catch (error) { // read mid-swap (a new certificate, the old key): again in a second
    console.error(`TLS files not reloaded yet: ${error.message}`)
  }
}, 1000).unref()

// SIGTERM: stop taking connections; Node exits once the requests under way are answered.
process.on('SIGTERM', () => server.close())
server.listen(PORT, () => console.log(`@SERVICE@: serving HTTPS with mutual TLS on port ${PORT}`))
"""

_NODE_CLIENT = r"""
// Call @SERVICE@ with mutual TLS (from @CALLER@, or any service @SERVICE@ accepts).
// Node.js alone. Each line read is a path to GET (an empty line: /), each answer is printed:
// echo / | node client.js
const fs = require('fs')
const https = require('https')
const path = require('path')
const readline = require('readline')
const tls = require('tls')

const TLS_DIR = process.env.STACKBLAZE_TLS_DIR || '@TLS_DIR@'
const BASE_URL = 'https://@SERVICE@.internal:@PORT@'
const TLS_FILES = ['cert.pem', 'key.pem', 'ca.pem'].map((name) => path.join(TLS_DIR, name))

@STAMP@

let current = { stamp: '', agent: null }

// Our certificate, and ca.pem as the only CAs to trust (the hostname is checked as usual).
// Made again when the files change: the platform renews the certificate and rotates the CA by
// swapping the files in place, without a restart.
function agent() {
  try {
    const now = stamp(TLS_FILES)
    if (now !== current.stamp) {
      const [cert, key, ca] = TLS_FILES.map((file) => fs.readFileSync(file))
      const secureContext = tls.createSecureContext({ cert, key, ca })
      current = { stamp: now, agent: new https.Agent({ secureContext }) }
    }
  } catch (error) { // read mid-swap (a new certificate, the old key): keep the last
    if (!current.agent) throw error
  }
  return current.agent
}

// GET from @SERVICE@: [status, body]. A refusal (403) is an answer too, not an error.
function call(urlPath = '/') {
  return new Promise((resolve, reject) => {
    const req = https.get(BASE_URL + urlPath, { agent: agent(), timeout: 10000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => resolve([res.statusCode, body]))
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
  })
}

;(async () => {
  for await (const line of readline.createInterface({ input: process.stdin })) {
    try {
      const [status, body] = await call(line.trim() || '/')
      console.log(status, body.trim())
    } catch (error) { // refused at the handshake, unreachable, timed out
      console.log('error', error.message)
    }
  }
})()
"""

_GO_RELOADING = r"""
// tlsDir holds what the platform delivers: cert.pem, key.pem, ca.pem, accept.txt.
var tlsDir = cmp.Or(os.Getenv("STACKBLAZE_TLS_DIR"), "@TLS_DIR@")

func file(name string) string { return filepath.Join(tlsDir, name) }

// reloading is a value built from files, built again when they change: the platform swaps them
// in place (a renewed certificate, a CA rotation, a new accept list) and restarts nothing.
type reloading[T any] struct {
	paths []string
	build func() (T, error)
	mu    sync.Mutex
	seen  []os.FileInfo
	value T
}

func (r *reloading[T]) get() (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed, now := r.seen == nil, make([]os.FileInfo, len(r.paths))
	var err error
	for i, path := range r.paths {
		if now[i], err = os.Stat(path); err != nil { // os.Stat follows the symlinks the files are
			break
		}
		changed = changed || !same(now[i], r.seen[i])
	}
	if err == nil && changed {
		var value T
		if value, err = r.build(); err == nil {
			r.value, r.seen = value, now
		}
	}
	if r.seen != nil {
		err = nil // read mid-swap (a new certificate, the old key): keep the last one
	}
	return r.value, err
}

// same says whether a file is the one seen before: a swap shows as another file (inode).
func same(now, before os.FileInfo) bool {
	return os.SameFile(now, before) && now.ModTime().Equal(before.ModTime())
}

func loadTLS() (tls.Certificate, *x509.CertPool, error) {
	certificate, err := tls.LoadX509KeyPair(file("cert.pem"), file("key.pem"))
	if err != nil {
		return certificate, nil, err
	}
	cas, err := os.ReadFile(file("ca.pem"))
	if err != nil {
		return certificate, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cas) {
		return certificate, nil, errors.New("no CA certificate in " + file("ca.pem"))
	}
	return certificate, pool, nil
}
"""

_GO_SERVER = r"""
// @SERVICE@: HTTPS on port @PORT@, for the services its accept list names only (mutual TLS).
// Go's standard library only: go run server.go
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

const port = "@PORT@"

@RELOADING@

var serverTLS = &reloading[*tls.Config]{
	paths: []string{file("cert.pem"), file("key.pem"), file("ca.pem")},
	build: func() (*tls.Config, error) {
		certificate, cas, err := loadTLS()
		if err != nil {
			return nil, err
		}
		return &tls.Config{
			Certificates: []tls.Certificate{certificate},
			ClientCAs:    cas, // the project's CA (two of them during a rotation)
			ClientAuth:   tls.RequireAndVerifyClientCert,
		}, nil
	},
}

var acceptList = &reloading[[]string]{
	paths: []string{file("accept.txt")},
	build: func() ([]string, error) {
		text, err := os.ReadFile(file("accept.txt"))
		if err != nil {
			return nil, err
		}
		accepted := []string{} // none: nobody may call
		for _, line := range strings.Split(string(text), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				accepted = append(accepted, line)
			}
		}
		return accepted, nil
	},
}

// accepts says whether accept.txt lets the caller in; the CA vouched for who it is.
func accepts(caller string) bool {
	accepted, err := acceptList.get()
	if err != nil || caller == "" {
		return false
	}
	for _, allowed := range accepted {
		project, wildcard := strings.CutSuffix(allowed, "/*") // ".../service/*": all its services
		if caller == allowed || (wildcard && strings.HasPrefix(caller, project+"/")) {
			return true
		}
	}
	return false
}

func handle(w http.ResponseWriter, r *http.Request) {
	// Its identity first; a renamed service's old one after it while the old name lives.
	caller, ok := "", false
	for i, uri := range r.TLS.PeerCertificates[0].URIs {
		if i == 0 {
			caller = uri.String()
		}
		ok = ok || accepts(uri.String())
	}
	if !ok {
		who := cmp.Or(caller, "A caller without identity")
		http.Error(w, who+" may not call @SERVICE@", http.StatusForbidden)
		return
	}
	fmt.Fprintf(w, "Hello, %s\n", caller)
}

func main() {
	if _, err := serverTLS.get(); err != nil {
		log.Fatal(err)
	}
	server := &http.Server{
		Addr:    ":" + port,
		Handler: http.HandlerFunc(handle),
		TLSConfig: &tls.Config{
			// Asked at every handshake: a renewed certificate or a new CA counts from the next.
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				return serverTLS.get()
			},
		},
	}
	go func() {
		if err := server.ListenAndServeTLS("", ""); !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	log.Printf("@SERVICE@: serving HTTPS with mutual TLS on port %s", port)
	// SIGTERM: stop taking connections, finish the requests under way, exit.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	if err := server.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
}
"""

_GO_CLIENT = r"""
// Call @SERVICE@ with mutual TLS (from @CALLER@, or any service @SERVICE@ accepts).
// Go's standard library only. Each line read is a path to GET (an empty line: /), each answer
// is printed: echo / | go run client.go
package main

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const baseURL = "https://@SERVICE@.internal:@PORT@"

@RELOADING@

// client shows our certificate and trusts ca.pem only (the hostname is checked as usual).
var client = &reloading[*http.Client]{
	paths: []string{file("cert.pem"), file("key.pem"), file("ca.pem")},
	build: func() (*http.Client, error) {
		certificate, cas, err := loadTLS()
		if err != nil {
			return nil, err
		}
		transport := &http.Transport{
			TLSClientConfig: &tls.Config{
				Certificates: []tls.Certificate{certificate},
				RootCAs:      cas,
			},
			IdleConnTimeout: time.Minute, // a replaced client's connections close by themselves
		}
		return &http.Client{Transport: transport, Timeout: 10 * time.Second}, nil
	},
}

// call GETs a path from @SERVICE@. A refusal (403) is an answer too, not an error.
func call(path string) (int, string, error) {
	c, err := client.get()
	if err != nil {
		return 0, "", err
	}
	response, err := c.Get(baseURL + path)
	if err != nil {
		return 0, "", err // refused at the handshake, unreachable, timed out
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	return response.StatusCode, string(body), err
}

func main() {
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		status, body, err := call(cmp.Or(strings.TrimSpace(lines.Text()), "/"))
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		fmt.Println(status, strings.TrimSpace(body))
	}
}
"""


def snippets(service: str, port: int, caller: str, caller_port: int) -> dict[str, str]:
    """Mutual TLS code for ``service`` (serving on ``port``) and for its callers, keyed by the
    label of its tab. ``caller`` names an example service that calls it.

    Servers admit a caller whose certificate the project's CA signed and whose SPIFFE ID
    ``accept.txt`` lists; clients dial ``<service>.internal:<port>`` with their own certificate.
    ``caller_port`` is not shown: a caller's own port plays no part in calling.
    """
    for name in (service, caller):
        if not _DNS_LABEL.fullmatch(name):
            raise ValueError(f"{name!r} is not a service name (a DNS label)")
    for number in (port, caller_port):
        if not 0 < number < 65536:
            raise ValueError(f"{number} is not a port number (1 to 65535)")

    def fill(template: str) -> str:
        return (
            template.removeprefix("\n")
            .replace("@SERVICE@", service)
            .replace("@CALLER@", caller)
            .replace("@PORT@", str(port))
            .replace("@TLS_DIR@", TLS_DIR)
        )

    python, node, go = (
        part.strip("\n") for part in (_PYTHON_RELOADING, _NODE_STAMP, _GO_RELOADING)
    )
    return {
        "Python server (ssl)": fill(_PYTHON_SERVER.replace("@RELOADING@", python)),
        "Python client (urllib, httpx, requests)": fill(
            _PYTHON_CLIENT.replace("@RELOADING@", python)
        ),
        "Node.js server (https)": fill(_NODE_SERVER.replace("@STAMP@", node)),
        "Node.js client (https)": fill(_NODE_CLIENT.replace("@STAMP@", node)),
        "Go server (crypto/tls)": fill(_GO_SERVER.replace("@RELOADING@", go)),
        "Go client (crypto/tls)": fill(_GO_CLIENT.replace("@RELOADING@", go)),
    }
