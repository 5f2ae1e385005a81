// The test cluster's workload: one static binary that plays a service's pod (an HTTP echo, a
// TCP listener) and, run with `kubectl exec`, asks questions from inside a pod (resolve a
// name, open a connection, fetch a URL). Each question prints one JSON line and exits 0 when
// the answer is a success, 1 when it is a refusal or a failure, 2 on bad usage.
//
//	workload http  [-port 8080]... [-bind 127.0.0.1]   answer GET / with who answered
//	workload tcp   [-port 5432]... [-bind 127.0.0.1]   accept connections, greet, close
//	workload sleep                           do nothing until stopped
//	workload resolve NAME                    resolve NAME with the pod's resolv.conf
//	workload connect HOST:PORT [-timeout 2s] open a TCP connection
//	workload get URL [-timeout 2s] [-H 'Name: value']...   fetch URL
//	workload loop URL -every 100ms -H ...    fetch URL until stopped, logging each answer
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type ports []string

func (p *ports) String() string     { return strings.Join(*p, ",") }
func (p *ports) Set(v string) error { *p = append(*p, v); return nil }

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ",") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	command, args := os.Args[1], os.Args[2:]
	switch command {
	case "http":
		serve(args, serveHTTP)
	case "tcp":
		serve(args, serveTCP)
	case "sleep":
		waitForSignal()
	case "resolve":
		resolve(args)
	case "connect":
		connect(args)
	case "get":
		get(args)
	case "loop":
		loop(args)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: workload http|tcp|sleep|resolve|connect|get|loop ...")
	os.Exit(2)
}

func report(ok bool, fields map[string]any) {
	fields["ok"] = ok
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
	if !ok {
		os.Exit(1)
	}
	os.Exit(0)
}

func identity() map[string]string {
	host, _ := os.Hostname()
	return map[string]string{
		"pod":       host,
		"namespace": os.Getenv("POD_NAMESPACE"),
		"service":   os.Getenv("SERVICE_NAME"),
	}
}

func waitForSignal() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	os.Exit(0)
}

func serve(args []string, listen func(bind, port string)) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	var list ports
	flags.Var(&list, "port", "port to listen on (repeatable)")
	bind := flags.String("bind", "", "address to listen on (default: every address)")
	_ = flags.Parse(args)
	if len(list) == 0 {
		list = ports{"8080"}
	}
	for _, port := range list {
		go listen(*bind, port)
	}
	waitForSignal()
}

func serveHTTP(bind, port string) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer := map[string]any{"port": port, "path": r.URL.Path, "from": r.RemoteAddr}
		for key, value := range identity() {
			answer[key] = value
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer)
	})
	server := &http.Server{Addr: net.JoinHostPort(bind, port), Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func serveTCP(bind, port string) {
	listener, err := net.Listen("tcp", net.JoinHostPort(bind, port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	who := identity()
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		go func(conn net.Conn) {
			defer conn.Close()
			fmt.Fprintf(conn, "stackblaze-workload %s %s %s\n", who["service"], who["pod"], port)
		}(conn)
	}
}

func resolve(args []string) {
	if len(args) != 1 {
		usage()
	}
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addresses, err := net.DefaultResolver.LookupHost(ctx, args[0])
	fields := map[string]any{"name": args[0], "ms": time.Since(started).Milliseconds()}
	if err != nil {
		var dnsError *net.DNSError
		fields["error"] = err.Error()
		fields["not_found"] = errors.As(err, &dnsError) && dnsError.IsNotFound
		report(false, fields)
	}
	fields["addresses"] = addresses
	report(true, fields)
}

// outcome names what a failed dial met: a refusal (RST), a timeout (dropped packets), or else.
func outcome(err error) string {
	var netError net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &netError) && netError.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	default:
		return "error"
	}
}

func connect(args []string) {
	flags := flag.NewFlagSet("connect", flag.ExitOnError)
	timeout := flags.Duration("timeout", 2*time.Second, "give up after")
	_ = flags.Parse(reorder(args))
	if flags.NArg() != 1 {
		usage()
	}
	address := flags.Arg(0)
	started := time.Now()
	conn, err := net.DialTimeout("tcp", address, *timeout)
	fields := map[string]any{"address": address, "ms": time.Since(started).Milliseconds()}
	if err != nil {
		fields["error"] = err.Error()
		fields["outcome"] = outcome(err)
		report(false, fields)
	}
	defer conn.Close()
	fields["outcome"] = "connected"
	fields["remote"] = conn.RemoteAddr().String()
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err == nil {
		fields["greeting"] = strings.TrimSpace(line)
	}
	report(true, fields)
}

func request(url string, list headers, timeout time.Duration) (int, string, error) {
	client := &http.Client{Timeout: timeout}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for _, header := range list {
		name, value, _ := strings.Cut(header, ":")
		req.Header.Set(strings.TrimSpace(name), os.ExpandEnv(strings.TrimSpace(value)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), nil
}

func get(args []string) {
	flags := flag.NewFlagSet("get", flag.ExitOnError)
	timeout := flags.Duration("timeout", 2*time.Second, "give up after")
	var list headers
	flags.Var(&list, "H", "request header 'Name: value'; $VARIABLES are expanded (repeatable)")
	_ = flags.Parse(reorder(args))
	if flags.NArg() != 1 {
		usage()
	}
	started := time.Now()
	status, body, err := request(flags.Arg(0), list, *timeout)
	fields := map[string]any{"url": flags.Arg(0), "ms": time.Since(started).Milliseconds()}
	if err != nil {
		fields["error"] = err.Error()
		fields["outcome"] = outcome(err)
		report(false, fields)
	}
	fields["status"] = status
	fields["body"] = body
	report(status < 400, fields)
}

// loop fetches URL until stopped, one JSON line per answer on stdout (read as the pod's log).
func loop(args []string) {
	flags := flag.NewFlagSet("loop", flag.ExitOnError)
	every := flags.Duration("every", 100*time.Millisecond, "pause between requests")
	timeout := flags.Duration("timeout", 2*time.Second, "give up on one request after")
	var list headers
	flags.Var(&list, "H", "request header 'Name: value'; $VARIABLES are expanded (repeatable)")
	_ = flags.Parse(reorder(args))
	if flags.NArg() != 1 {
		usage()
	}
	go waitForSignal()
	for {
		status, _, err := request(flags.Arg(0), list, *timeout)
		fields := map[string]any{"at": time.Now().UTC().Format(time.RFC3339Nano), "status": status}
		if err != nil {
			fields["error"] = err.Error()
		}
		line, _ := json.Marshal(fields)
		fmt.Println(string(line))
		time.Sleep(*every)
	}
}

// reorder puts flags before the positional argument, so `get URL -timeout 1s` works too.
func reorder(args []string) []string {
	var flagArgs, positional []string
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			flagArgs = append(flagArgs, args[i])
			if !strings.Contains(args[i], "=") && i+1 < len(args) {
				flagArgs = append(flagArgs, args[i+1])
				i++
			}
			continue
		}
		positional = append(positional, args[i])
	}
	return append(flagArgs, positional...)
}
