package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func netDial(a string) (net.Conn, error) { return net.DialTimeout("tcp", a, time.Second) }

// verifyStatus is the status of GET /v1/verify for token on nd.
func verifyStatus(hc *http.Client, nd *node, token string) int {
	req, _ := http.NewRequest("GET", "http://"+nd.http+"/v1/verify", nil)
	req.Header.Set("X-API-Key", token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

type createdKey struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// stepRevocation: 200 revocations on the leader of a 3-node cluster; for
// each, the time from sending the revoke until every node answers 401.
func stepRevocation() {
	c := startKeyraft("rev", 3)
	leader := c.leader()
	keys := make([]createdKey, cfg.revocations)
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(keys); i = int(next.Add(1)) - 1 {
				if _, err := c.call(leader, "POST", "/v1/keys", map[string]any{"name": fmt.Sprint("rev-", i), "workspace_id": "bench"}, &keys[i]); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for _, nd := range c.nodes { // every key is visible everywhere before we start
		for _, k := range keys {
			deadline := time.Now().Add(10 * time.Second)
			for verifyStatus(hc, nd, k.Key) != 200 {
				if time.Now().After(deadline) {
					panic("created key never valid on " + nd.id)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	var all, ack, onLeader []float64
	for _, k := range keys {
		t0 := time.Now()
		seen := make([]float64, len(c.nodes))
		var pw sync.WaitGroup
		for i, nd := range c.nodes {
			pw.Add(1)
			go func() {
				defer pw.Done()
				for time.Since(t0) < 10*time.Second {
					if verifyStatus(hc, nd, k.Key) == 401 {
						seen[i] = time.Since(t0).Seconds() * 1000
						return
					}
					time.Sleep(time.Millisecond)
				}
				seen[i] = math.Inf(1)
			}()
		}
		if _, err := c.call(leader, "POST", "/v1/keys/"+k.ID+"/revoke", nil, nil); err != nil {
			panic(err)
		}
		ack = append(ack, time.Since(t0).Seconds()*1000)
		pw.Wait()
		worst := 0.0
		for i, s := range seen {
			worst = max(worst, s)
			if c.nodes[i] == leader {
				onLeader = append(onLeader, s)
			}
		}
		all = append(all, worst)
	}
	sort.Float64s(all)
	q := func(v []float64, p float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		return round(s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)], 2)
	}
	fig("revoke.count", float64(len(all)))
	fig("revoke.all_nodes.p50_ms", q(all, 0.5))
	fig("revoke.all_nodes.p99_ms", q(all, 0.99))
	fig("revoke.all_nodes.max_ms", round(all[len(all)-1], 2))
	fig("revoke.leader.p50_ms", q(onLeader, 0.5))
	fig("revoke.ack.p50_ms", q(ack, 0.5))
	fig("revoke.ack.p99_ms", q(ack, 0.99))
	note("revocation: visibility polled with GET /v1/verify on each node every 1 ms; keyraft's default --commit-timeout 10ms, --heartbeat-timeout 1s")
}

// etcdCluster starts a 3-member etcd cluster and returns the client URL of its leader.
func startEtcd() string {
	type member struct{ name, client, peer string }
	var ms []member
	var initial []string
	for i := 1; i <= 3; i++ {
		m := member{name: fmt.Sprint("etcd", i), client: "http://" + addr(freePort()), peer: "http://" + addr(freePort())}
		ms = append(ms, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	for _, m := range ms {
		dir := filepath.Join(cfg.work, m.name)
		must(os.MkdirAll(dir, 0o700))
		start(m.name, nil, "etcd", "--name", m.name, "--data-dir", dir,
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "bench", "--initial-cluster-state", "new",
			"--logger", "zap", "--log-level", "warn")
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		leader := ""
		healthy := 0
		for _, m := range ms {
			resp, err := client.Post(m.client+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
			if err != nil {
				continue
			}
			var st struct {
				Header struct {
					MemberID string `json:"member_id"`
				} `json:"header"`
				Leader string `json:"leader"`
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			healthy++
			if st.Leader != "" && st.Leader != "0" && st.Leader == st.Header.MemberID {
				leader = m.client
			}
		}
		if healthy == 3 && leader != "" {
			return leader
		}
		time.Sleep(200 * time.Millisecond)
	}
	panic("etcd cluster did not elect a leader")
}

// drive runs clients goroutines doing do() back to back for d and returns
// completed operations per second (failures are counted and reported).
func drive(clients int, d time.Duration, do func(hc *http.Client, g, i int) bool) (perSec float64, failed int64) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	var done, bad atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	end := t0.Add(d)
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				if do(hc, g, i) {
					done.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	hc.CloseIdleConnections()
	return float64(done.Load()) / time.Since(t0).Seconds(), bad.Load()
}

func post(hc *http.Client, url, auth string, body []byte, want int) bool {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == want
}

// stepWrites: key creates/s on a 3-node keyraft cluster against puts/s on a
// 3-node etcd cluster, same driver, same client counts, interleaved.
func stepWrites() {
	c := startKeyraft("w", 3)
	leader := c.leader()
	etcd := startEtcd()
	// A put of about the size of a stored key record.
	val := make([]byte, 300)
	rand.Read(val)
	valB64 := base64.StdEncoding.EncodeToString(val)
	run := 0
	createKey := func(hc *http.Client, g, i int) bool {
		body := fmt.Appendf(nil, `{"name":"w-%d-%d-%d","workspace_id":"bench"}`, run, g, i)
		return post(hc, "http://"+leader.http+"/v1/keys", c.root, body, 201)
	}
	putEtcd := func(hc *http.Client, g, i int) bool {
		k := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "bench/w-%d-%d-%d", run, g, i))
		return post(hc, etcd+"/v3/kv/put", "", []byte(`{"key":"`+k+`","value":"`+valB64+`"}`), 200)
	}
	// one warm-up round of each
	drive(4, 500*time.Millisecond, createKey)
	drive(4, 500*time.Millisecond, putEtcd)
	for _, n := range cfg.writeClients {
		var kr, et []float64
		for p := 0; p < cfg.pairs; p++ {
			run++
			k, kbad := drive(n, cfg.writeDur, createKey)
			e, ebad := drive(n, cfg.writeDur, putEtcd)
			kr, et = append(kr, k), append(et, e)
			logf("writes c=%d pair %d: keyraft %.0f/s (%d failed), etcd %.0f/s (%d failed)", n, p, k, kbad, e, ebad)
			if kbad > 0 || ebad > 0 {
				note("writes c=%d pair %d: %d keyraft and %d etcd requests failed", n, p, kbad, ebad)
			}
		}
		fig(fmt.Sprintf("writes.keyraft.c%d.per_s", n), math.Round(median(kr)))
		fig(fmt.Sprintf("writes.etcd.c%d.per_s", n), math.Round(median(et)))
		pairRatio(fmt.Sprintf("writes.keyraft_over_etcd.c%d", n), kr, et)
	}
	note("writes: keyraft POST /v1/keys to the leader (root key); etcd 3.4 POST /v3/kv/put to the leader with a %d-byte value; fsync on for both (defaults); Go net/http driver", len(val))
}
