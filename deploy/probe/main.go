// stackblaze-probe: what "Test connection" runs, as a short-lived pod in the project's own
// namespace. It resolves the service's hostname the way any pod of the project does (its
// resolv.conf, search path and all), opens a TCP connection to each port, and writes one JSON
// report to standard output and to the pod's termination message, where the worker reads it
// without any access to pod logs.
//
//	stackblaze-probe -host api.internal -port 8080 [-port 9090] [-timeout 3s]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type portList []int

func (p *portList) String() string { return fmt.Sprint(*p) }

func (p *portList) Set(value string) error {
	port, err := strconv.Atoi(value)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("not a port: %q", value)
	}
	*p = append(*p, port)
	return nil
}

// DNS is what the resolver answered.
type DNS struct {
	Addresses []string `json:"addresses"`
	Error     string   `json:"error,omitempty"`
	NotFound  bool     `json:"not_found,omitempty"`
	Ms        float64  `json:"ms"`
}

// Port is what a TCP connection to one port met.
type Port struct {
	Port     int     `json:"port"`
	Address  string  `json:"address,omitempty"`
	Outcome  string  `json:"outcome"` // connected, refused, timeout, unreachable, error, skipped
	Error    string  `json:"error,omitempty"`
	Ms       float64 `json:"ms"`
	Attempts int     `json:"attempts,omitempty"`
}

// Report is the probe's whole answer.
type Report struct {
	Host  string `json:"host"`
	DNS   DNS    `json:"dns"`
	Ports []Port `json:"ports"`
}

func milliseconds(since time.Time) float64 {
	return float64(time.Since(since).Microseconds()) / 1000
}

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

// A refusal or a missing route right after the probe starts may be the network catching up
// with the probe itself: a NetworkPolicy enforcer learns a new pod's address a moment after the
// pod starts (seconds, on a busy node), and until then the project's own policy does not know
// it as one of the project's pods. Such answers are tried again until retryUntil: one deadline
// for the whole probe, one step after it started, since the catch-up is the pod's, not a
// port's (ten closed ports cost one step of retries, not ten). A connection that succeeds, or a
// first attempt that times out (packets dropped), is final. A retry that times out after a
// refusal is the kernel's limit on refusals sent (about one a second), not an answer: the
// refusal stands unless a later try connects.
const retryEvery = 250 * time.Millisecond

func dial(result *Port, timeout time.Duration, retryUntil time.Time) {
	for {
		result.Attempts++
		wait := timeout
		if result.Attempts > 1 {
			wait = min(time.Until(retryUntil), time.Second)
			if wait <= 0 {
				return
			}
		}
		started := time.Now()
		conn, err := net.DialTimeout("tcp", result.Address, wait)
		if err == nil {
			conn.Close()
			result.Ms = milliseconds(started)
			result.Outcome, result.Error = "connected", ""
			return
		}
		found := outcome(err)
		if result.Attempts == 1 || found != "timeout" {
			result.Ms = milliseconds(started)
			result.Outcome, result.Error = found, err.Error()
		}
		retryable := result.Outcome == "refused" || result.Outcome == "unreachable"
		if !retryable || time.Until(retryUntil) < retryEvery {
			return
		}
		time.Sleep(retryEvery)
	}
}

func probe(host string, ports []int, timeout time.Duration) Report {
	report := Report{Host: host, Ports: []Port{}}
	started := time.Now()
	retryUntil := started.Add(timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	addresses, err := net.DefaultResolver.LookupHost(ctx, host)
	cancel()
	report.DNS = DNS{Addresses: addresses, Ms: milliseconds(started)}
	if report.DNS.Addresses == nil {
		report.DNS.Addresses = []string{}
	}
	if err != nil {
		var dnsError *net.DNSError
		report.DNS.Error = err.Error()
		report.DNS.NotFound = errors.As(err, &dnsError) && dnsError.IsNotFound
	}
	for _, port := range ports {
		result := Port{Port: port}
		if len(addresses) == 0 {
			result.Outcome = "skipped"
			report.Ports = append(report.Ports, result)
			continue
		}
		result.Address = net.JoinHostPort(addresses[0], strconv.Itoa(port))
		dial(&result, timeout, retryUntil)
		report.Ports = append(report.Ports, result)
	}
	return report
}

func main() {
	host := flag.String("host", "", "hostname to resolve, e.g. api.internal")
	timeout := flag.Duration("timeout", 3*time.Second, "give up on one step after")
	var ports portList
	flag.Var(&ports, "port", "TCP port to connect to (repeatable)")
	flag.Parse()
	if *host == "" || strings.ContainsAny(*host, " /") {
		fmt.Fprintln(os.Stderr, "usage: stackblaze-probe -host NAME -port N [-port M] [-timeout 3s]")
		os.Exit(2)
	}
	line, _ := json.Marshal(probe(*host, ports, *timeout))
	fmt.Println(string(line))
	// The kubelet copies this file into the pod's status (up to 4 KiB): the worker reads it there.
	_ = os.WriteFile("/dev/termination-log", line, 0o644)
}
