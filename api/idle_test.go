package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/keyraft/keyraft/api"
)

// idleConns is how many idle connections TestIdleConnections opens from one
// address. The client sides are held by a child process, so that this
// process's heap and descriptors are the node's alone (and RLIMIT_NOFILE,
// 20,000 here and not raisable, never has to hold both ends).
const idleConns = 10_000

// raiseNoFile lifts the soft descriptor limit to the hard one and returns it.
func raiseNoFile() uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 1024
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return l.Cur
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestIdleConnHolder is the child process of TestIdleConnections: it opens
// KEYRAFT_IDLE_N connections to KEYRAFT_IDLE_ADDR from 127.0.0.1, half of
// them silent (connected, nothing sent) and half idle keep-alive connections
// that had one request answered. It reports "held OPEN of N, ok A, refused R"
// (OPEN: still open once the node has caught up, see below; A and R: the keep-alive half's answers
// 200 and 429), and keeps the connections until its standard input closes.
func TestIdleConnHolder(t *testing.T) {
	addr := os.Getenv("KEYRAFT_IDLE_ADDR")
	if addr == "" {
		t.Skip("helper process of TestIdleConnections")
	}
	want, _ := strconv.Atoi(os.Getenv("KEYRAFT_IDLE_N"))
	raiseNoFile()
	conns := make([]net.Conn, 0, want)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	ok, refused := 0, 0
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 10 * time.Second}
	for i := range want {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			fmt.Printf("dial %d: %v\n", i, err)
			break
		}
		conns = append(conns, c)
		if i%2 == 0 {
			continue
		}
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			// A refused connection may be closed before the request is read.
			refused++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			refused++
		default:
			fmt.Printf("request %d: status %d\n", i, resp.StatusCode)
		}
	}
	// The node refuses a connection over the limit in its accept loop, so
	// the last ones dialled may still wait in the listen backlog, open, for
	// as long as that loop lags behind (seconds on a loaded machine: CI's
	// race build once still held 2 over the limit after 10 s). Count again
	// until the count is at most the limit, or 30 s have passed.
	limit, _ := strconv.Atoi(os.Getenv("KEYRAFT_IDLE_LIMIT"))
	var open int
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(300 * time.Millisecond)
		open = countOpen(conns)
		if open <= limit || time.Now().After(deadline) {
			break
		}
	}
	fmt.Printf("held %d of %d, ok %d, refused %d\n", open, len(conns), ok, refused)
	io.Copy(io.Discard, os.Stdin)
}

// countOpen counts the connections the node has not closed: a read that
// times out rather than returning EOF.
func countOpen(conns []net.Conn) int {
	open := 0
	var b [1]byte
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(b[:]); isTimeout(err) {
			open++
		}
	}
	return open
}

// TestIdleConnections: 10,000 idle connections from one address cost the
// node bounded memory (at most Config.MaxConnsPerIP of them are kept; the
// rest are answered 429 and closed), and other clients are still served
// promptly. Not parallel: it measures the process's heap.
func TestIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 connections")
	}
	n := startNode(t, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour, quiet: true,
		// Long enough that the silent connections are still open when
		// memory is measured; the defaults close them after 10s (and idle
		// keep-alive ones after 60s).
		apiConfig: func(c *api.Config) { c.ReadTimeout, c.IdleTimeout = time.Minute, time.Minute }})
	k, _ := n.secretKey("ws_idle")
	before := n.mark(k.ID)
	n.client.CloseIdleConnections() // the harness's own connections do not count

	want := idleConns
	if limit := raiseNoFile(); limit < uint64(want)+1000 {
		want = int(limit) - 1000
		t.Logf("RLIMIT_NOFILE is %d: opening %d connections instead of %d", limit, want, idleConns)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	fd0 := openFDs()

	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleConnHolder$", "-test.count=1")
	limit := api.DefaultMaxConnsPerIP
	cmd.Env = append(os.Environ(), "KEYRAFT_IDLE_ADDR="+n.ln.Addr().String(), "KEYRAFT_IDLE_N="+strconv.Itoa(want),
		"KEYRAFT_IDLE_LIMIT="+strconv.Itoa(limit))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	started := time.Now()
	var open, dialed, ok, refused int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if _, err := fmt.Sscanf(line, "held %d of %d, ok %d, refused %d", &open, &dialed, &ok, &refused); err == nil {
			break
		}
		t.Logf("holder: %s", line)
	}
	go io.Copy(io.Discard, stdout)
	t.Logf("%d connections from one address after %v: %d still open; keep-alive half: %d served, %d refused",
		dialed, time.Since(started).Round(time.Millisecond), open, ok, refused)
	if dialed < want {
		t.Fatalf("the holder opened %d of %d connections", dialed, want)
	}
	if open < limit-10 || open > limit {
		t.Errorf("%d connections kept open, want the per-address limit %d", open, limit)
	}
	if ok+refused != dialed/2 || refused < dialed/2-limit {
		t.Errorf("keep-alive half: %d served and %d refused of %d", ok, refused, dialed/2)
	}
	if fds := openFDs() - fd0; fds > limit+50 {
		t.Errorf("the node holds %d more descriptors, over the limit of %d connections", fds, limit)
	}

	// Other clients, from another address, are served promptly.
	other := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	for i := range 20 {
		req, _ := http.NewRequest("GET", n.base+"/v1/verify", nil)
		req.Header.Set("X-API-Key", k.Key)
		start := time.Now()
		resp, err := other.Do(req)
		if err != nil {
			t.Fatalf("another client's request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if took := time.Since(start); resp.StatusCode != http.StatusOK || took > time.Second {
			t.Errorf("another client's request %d: %d after %v", i, resp.StatusCode, took)
		}
	}
	other.CloseIdleConnections()

	runtime.GC()
	runtime.ReadMemStats(&m1)
	heap := int64(m1.HeapInuse) - int64(m0.HeapInuse)
	stacks := int64(m1.StackInuse) - int64(m0.StackInuse)
	t.Logf("heap +%d KiB (%d B per open connection), goroutine stacks +%d KiB, %d goroutines",
		heap>>10, heap/int64(max(open, 1)), stacks>>10, runtime.NumGoroutine())
	// Bounded by the per-address limit, not by what the client opened: an
	// open connection holds about 25 KiB (its 16 KiB read buffer included).
	const perConn = 40 << 10
	if bound := int64(limit) * perConn; heap > bound {
		t.Errorf("heap grew by %d KiB with %d connections open; the bound is %d KiB", heap>>10, open, bound>>10)
	}

	stdin.Close()
	cmd.Wait()
	n.unchanged(t, "idle connections", before)
}
