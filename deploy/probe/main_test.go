package main

import (
	"net"
	"testing"
	"time"
)

// A port that starts accepting while the probe retries (the network catching up with a new
// pod) is reported connected, not refused.
func TestARefusalThatClearsIsConnected(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close() // refused until it listens again
	go func() {
		time.Sleep(600 * time.Millisecond)
		again, err := net.Listen("tcp", address)
		if err != nil {
			return
		}
		defer again.Close()
		conn, err := again.Accept()
		if err == nil {
			conn.Close()
		}
		time.Sleep(time.Second)
	}()
	result := Port{Address: address}
	dial(&result, 3*time.Second, time.Now().Add(3*time.Second))
	if result.Outcome != "connected" || result.Attempts < 2 {
		t.Fatalf("got %q after %d attempts, want connected after a retry", result.Outcome, result.Attempts)
	}
}

// Closed ports share one retry deadline: the second is tried once, not for another step.
func TestClosedPortsShareOneRetryDeadline(t *testing.T) {
	var addresses []string
	for range 2 {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addresses = append(addresses, listener.Addr().String())
		listener.Close()
	}
	started := time.Now()
	retryUntil := started.Add(time.Second)
	var results []Port
	for _, address := range addresses {
		result := Port{Address: address}
		dial(&result, 3*time.Second, retryUntil)
		results = append(results, result)
	}
	for _, result := range results {
		if result.Outcome != "refused" {
			t.Fatalf("%s: got %q, want refused", result.Address, result.Outcome)
		}
	}
	if results[0].Attempts < 2 || results[1].Attempts != 1 {
		t.Fatalf("attempts %d and %d: the first retries, the second does not",
			results[0].Attempts, results[1].Attempts)
	}
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Fatalf("took %s for two closed ports", elapsed)
	}
}
