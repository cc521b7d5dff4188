package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mayfly-sh/mayfly/bench/internal/goproxy"
)

// The control: the same clients and upstream, served by 1 and then 3
// processes of a pooled httputil.ReverseProxy that share nothing (no
// database, no audit, no tokens). Its 3 ÷ 1 ratio is what the machine's
// shared cores alone allow: mayfly's ratio against it is the cost of the
// cluster itself.

// controlResult is one control run.
type controlResult struct {
	perSec, cpuPerCall float64 // calls a second; the proxies' CPU per call, µs
}

// runControl serves the gateway phase's load with n proxy processes.
func runControl(upURL string, n int) controlResult {
	self, err := os.Executable()
	check(err)
	var cmds []*exec.Cmd
	var urls []string
	for range n {
		cmd := exec.Command(self, "-role", "goproxy", "-upstream", upURL)
		out, err := cmd.StdoutPipe()
		check(err)
		cmd.Stderr = os.Stderr
		check(cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			log.Fatalf("control proxy did not start: %v", err)
		}
		cmds, urls = append(cmds, cmd), append(urls, strings.TrimSpace(line))
	}
	defer func() {
		for _, c := range cmds {
			c.Process.Signal(os.Interrupt)
			c.Wait()
		}
	}()
	cpu := func() float64 {
		t := 0.0
		for _, c := range cmds {
			_, s := statUS(c.Process.Pid)
			t += s
		}
		return t
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer hc.CloseIdleConnections() // the proxies stop with this run
	clients := *clients
	if *perNode {
		clients *= n
	}
	c0 := cpu()
	var ok atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				r, _ := http.NewRequest("GET", urls[(w+i)%n]+"/r/"+strconv.Itoa(i), nil)
				r.Header.Set("Authorization", "Bearer control")
				resp, err := hc.Do(r)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	calls := float64(ok.Load())
	return controlResult{perSec: calls / el.Seconds(), cpuPerCall: (cpu() - c0) / max(calls, 1)}
}

// runGoProxy is one control process: a pooled httputil.ReverseProxy to
// -upstream on a loopback port, whose URL it prints; it stops on SIGINT.
func runGoProxy(upstream string) {
	target, err := url.Parse(upstream)
	check(err)
	proxy := goproxy.New(target, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	fmt.Printf("http://%s\n", l.Addr())
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(l)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
