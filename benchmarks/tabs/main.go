// Open tabs polling a project page's "anything new?" URL, as htmx does: each tab asks every
// interval, never with a poll still in flight (htmx drops the next one), starting at a random
// moment of its first interval. Prints one JSON line: polls answered per second, latency
// median and 90th percentile in milliseconds, and failures.
//
// Standard library only: `go run ./benchmarks/tabs -url ... -cookie ... -tabs 1000`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	urls := flag.String("urls", "", "poll URLs, separated by spaces (tab i uses URL i mod n)")
	cookies := flag.String("cookies", "", "session cookies, separated by spaces, paired with -urls")
	tabs := flag.Int("tabs", 100, "open tabs")
	every := flag.Duration("every", 2*time.Second, "poll interval")
	duration := flag.Duration("for", 20*time.Second, "measured time, after one interval of warm-up")
	flag.Parse()
	targets := strings.Fields(*urls)
	sessions := strings.Fields(*cookies)
	if len(targets) == 0 || len(targets) != len(sessions) {
		fmt.Fprintln(os.Stderr, "give as many -cookies as -urls, at least one")
		os.Exit(2)
	}

	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: *tabs, MaxConnsPerHost: 0},
	}
	var mu sync.Mutex
	var latencies []float64
	statuses := map[int]int{}
	failures := 0
	start := time.Now()
	measureFrom := start.Add(*every)
	stopAt := measureFrom.Add(*duration)

	var wg sync.WaitGroup
	for i := 0; i < *tabs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			target, session := targets[i%len(targets)], sessions[i%len(sessions)]
			time.Sleep(time.Duration(rand.Int63n(int64(*every))))
			for {
				began := time.Now()
				if began.After(stopAt) {
					return
				}
				request, _ := http.NewRequest("GET", target, nil)
				request.Header.Set("Cookie", session)
				request.Header.Set("HX-Request", "true")
				response, err := client.Do(request)
				took := time.Since(began)
				if err == nil {
					io.Copy(io.Discard, response.Body)
					response.Body.Close()
				}
				if began.After(measureFrom) {
					mu.Lock()
					if err != nil {
						failures++
					} else {
						statuses[response.StatusCode]++
						latencies = append(latencies, float64(took.Microseconds())/1000)
					}
					mu.Unlock()
				}
				if wait := *every - took; wait > 0 {
					time.Sleep(wait)
				}
			}
		}(i)
	}
	wg.Wait()
	sort.Float64s(latencies)
	quantile := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(q*float64(len(latencies)-1))]
	}
	codes := map[string]int{}
	for code, count := range statuses {
		codes[fmt.Sprint(code)] = count
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"answered_per_second": float64(len(latencies)) / duration.Seconds(),
		"median_ms":           quantile(0.5),
		"p90_ms":              quantile(0.9),
		"failures":            failures,
		"statuses":            codes,
	})
}
