package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

func runCmd(args ...string) string {
	command(args...)
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("%s: %v\n%s", strings.Join(args, " "), err, truncate(out, 2000)))
	}
	return string(out)
}

var (
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkTotal  = regexp.MustCompile(`(\d+) requests in`)
	wrkErrors = regexp.MustCompile(`Socket errors:.*`)
)

// cpuPlan is where the closed-loop runs put servers and load generators.
// In the split plan every server is pinned to the last CPU and every load
// generator to the others, so each server has the same one core and never
// competes with its own client: without it the Go servers (keyraft, the
// floor) share both cores with wrk, while single-threaded Redis leaves one
// to redis-benchmark, and the comparison measures the scheduler as much as
// the servers. The shared plan pins nothing, as a box running everything
// at once would.
type cpuPlan struct {
	name            string
	servers, client string // taskset CPU lists; client "" runs it unpinned
}

func cpuPlans() []cpuPlan {
	n := runtime.NumCPU()
	all := fmt.Sprintf("0-%d", n-1)
	shared := cpuPlan{name: "shared", servers: all}
	if _, err := exec.LookPath("taskset"); err != nil || n < 2 {
		note("HTTP: no CPU split (taskset missing or one CPU); only the shared runs")
		return []cpuPlan{shared}
	}
	client := "0"
	if n > 2 {
		client = fmt.Sprintf("0-%d", n-2)
	}
	return []cpuPlan{{name: "split", servers: strconv.Itoa(n - 1), client: client}, shared}
}

// pin moves every thread of the processes to the plan's server CPUs.
func (c cpuPlan) pin(pids ...int) {
	for _, pid := range pids {
		runCmd("taskset", "-apc", c.servers, strconv.Itoa(pid))
	}
}

// run runs a load generator under the plan.
func (c cpuPlan) run(args ...string) string {
	if c.client != "" {
		args = append([]string{"taskset", "-c", c.client}, args...)
	}
	return runCmd(args...)
}

// wrk runs the verify script against base for d (whole seconds) and returns req/s and the
// share of non-2xx answers.
func wrk(plan cpuPlan, base, keysFile string, d time.Duration) (rps, non2xx float64) {
	out := plan.run("wrk", "-t"+strconv.Itoa(cfg.wrkThreads), "-c"+strconv.Itoa(cfg.conns), "-d"+strconv.Itoa(max(1, int(d.Seconds()+0.5)))+"s",
		"-s", filepath.Join(cfg.repo, "bench/wrk/verify.lua"), "http://"+base, "--", keysFile)
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		panic("wrk: no Requests/sec in\n" + out)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	if e := wrkErrors.FindString(out); e != "" {
		logf("wrk %s: %s", base, e)
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		t, _ := strconv.ParseFloat(wrkTotal.FindStringSubmatch(out)[1], 64)
		non2xx = n / t
	}
	return rps, non2xx
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// redisGet runs redis-benchmark GET over the same key count and connections.
func redisGet(plan cpuPlan, port, n int) float64 {
	out := plan.run("redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "get", "-r", strconv.Itoa(cfg.httpKeys),
		"-c", strconv.Itoa(cfg.conns), "--threads", strconv.Itoa(cfg.wrkThreads), "-n", strconv.Itoa(n), "--csv")
	r := csv.NewReader(strings.NewReader(out))
	recs, err := r.ReadAll()
	must(err)
	for _, rec := range recs {
		if len(rec) > 1 && rec[0] == "GET" {
			v, err := strconv.ParseFloat(rec[1], 64)
			must(err)
			return v
		}
	}
	panic("redis-benchmark: no GET line in\n" + out)
}

// stepHTTP: closed-loop throughput (wrk; keyraft, fasthttp floor, Redis),
// then open-loop latency (vegeta; keyraft and floor) at fixed rates.
func stepHTTP() {
	c := startKeyraft("verify", 1)
	nd := c.nodes[0]
	_, keysFile := c.verifySet(nd, cfg.httpKeys)
	floorAddr := addr(freePort())
	floor := start("httpfloor", nil, cfg.floor, "--addr", floorAddr)
	redisPort := freePort()
	redis := start("redis", nil, "redis-server", "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no")
	waitTCP(floorAddr)
	waitTCP(addr(redisPort))
	runCmd("redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(redisPort), "-t", "set", "-r", strconv.Itoa(cfg.httpKeys),
		"-n", strconv.Itoa(cfg.httpKeys*4), "-d", "200", "-c", strconv.Itoa(cfg.conns), "-P", "16", "-q")
	plans := cpuPlans()
	note("HTTP: wrk -t%d -c%d and redis-benchmark --threads %d -c %d; in the split runs (the goals' figures) each server is pinned to CPU %s and the load generator to %s, in the shared runs (figures http.shared.*) nothing is pinned",
		cfg.wrkThreads, cfg.conns, cfg.wrkThreads, cfg.conns, plans[0].servers, plans[0].client)
	servers := []int{nd.p.pid(), floor.pid(), redis.pid()}

	// warm-up, not measured
	plans[0].pin(servers...)
	wrk(plans[0], nd.http, keysFile, time.Second)
	redisN := redisGet(plans[0], redisPort, 100_000) * cfg.wrkDur.Seconds()

	type runs struct{ kr, fl, rd []float64 }
	byPlan := map[string]*runs{}
	var non2xx float64
	for p := 0; p < cfg.noisyPairs; p++ {
		for _, plan := range plans {
			plan.pin(servers...)
			r := byPlan[plan.name]
			if r == nil {
				r = &runs{}
				byPlan[plan.name] = r
			}
			var k, n, f, d float64
			order := []func(){
				func() { k, n = wrk(plan, nd.http, keysFile, cfg.wrkDur) },
				func() { f, _ = wrk(plan, floorAddr, keysFile, cfg.wrkDur) },
				func() { d = redisGet(plan, redisPort, int(redisN)) },
			}
			if p%2 == 1 { // A B C, C B A: a drift in the machine's speed does not favour one server
				slices.Reverse(order)
			}
			for _, run := range order {
				run()
			}
			r.kr, r.fl, r.rd, non2xx = append(r.kr, k), append(r.fl, f), append(r.rd, d), max(non2xx, n)
			logf("pair %d, %s: keyraft %.0f floor %.0f redis %.0f req/s", p, plan.name, k, f, d)
		}
	}
	plans[len(plans)-1].pin(servers...) // the latency runs below share the cores
	for _, plan := range plans {
		pre := "http."
		if plan.name == "shared" && len(plans) > 1 {
			pre = "http.shared."
		}
		r := byPlan[plan.name]
		fig(pre+"keyraft.rps", math.Round(median(r.kr)))
		fig(pre+"floor.rps", math.Round(median(r.fl)))
		fig(pre+"redis_get.rps", math.Round(median(r.rd)))
		pairRatio(pre+"keyraft_over_floor", r.kr, r.fl)
		pairRatio(pre+"keyraft_over_redis", r.kr, r.rd)
	}
	fig("http.keyraft.non2xx_share", round(non2xx, 3))

	// Open loop. vegeta costs far more CPU per request than wrk, and shares
	// the 2 cores with the server: it cannot offer wrk's maximum. The rates
	// are therefore a share of keyraft's maximum as measured by vegeta itself
	// (closed loop, as many workers as wrk has connections).
	krTargets := vegetaTargets(keysFile, nd.http, "keyraft")
	flTargets := vegetaTargets(keysFile, floorAddr, "floor")
	var vk, vf []float64
	for p := 0; p < cfg.pairs; p++ {
		vk = append(vk, vegeta(krTargets, 0, cfg.vegDur).rate)
		vf = append(vf, vegeta(flTargets, 0, cfg.vegDur).rate)
	}
	maxRPS := median(vk)
	fig("http.vegeta_closed.keyraft.rps", math.Round(maxRPS))
	fig("http.vegeta_closed.floor.rps", math.Round(median(vf)))
	pairRatio("http.vegeta_closed.keyraft_over_floor", vk, vf)
	note("open loop: vegeta -workers=%d -max-workers=%d (one connection each); rates are 50/80/95%% of keyraft's closed-loop maximum under vegeta (figures.http.vegeta_closed.keyraft.rps), because vegeta cannot offer wrk's rate on these cores", cfg.conns, cfg.conns)
	for _, pct := range []int{50, 80, 95} {
		rate := int(maxRPS * float64(pct) / 100)
		var k99, f99 []float64
		var ks, fs []latencies
		for p := 0; p < cfg.pairs; p++ {
			k := vegeta(krTargets, rate, cfg.vegDur)
			f := vegeta(flTargets, rate, cfg.vegDur)
			ks, fs = append(ks, k), append(fs, f)
			k99, f99 = append(k99, k.p99), append(f99, f.p99)
			logf("%d%% (%d/s) pair %d: keyraft p99 %.2f ms (%.0f/s ok %.3f), floor p99 %.2f ms (%.0f/s)", pct, rate, p, k.p99, k.rate, k.ok, f.p99, f.rate)
		}
		pre := fmt.Sprintf("latency.%d", pct)
		fig(pre+".rate", float64(rate))
		for name, ls := range map[string][]latencies{"keyraft": ks, "floor": fs} {
			var p50, p99, p999, ach, ok []float64
			for _, l := range ls {
				p50, p99, p999 = append(p50, l.p50), append(p99, l.p99), append(p999, l.p999)
				ach, ok = append(ach, l.rate), append(ok, l.ok)
			}
			fig(pre+"."+name+".p50_ms", round(median(p50), 3))
			fig(pre+"."+name+".p99_ms", round(median(p99), 3))
			fig(pre+"."+name+".p999_ms", round(median(p999), 3))
			fig(pre+"."+name+".achieved_rps", math.Round(median(ach)))
			fig(pre+"."+name+".answered_share", round(median(ok), 4))
		}
		pairRatio(pre+".p99_keyraft_over_floor", k99, f99)
	}
}

func waitTCP(a string) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := netDial(a); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	panic("nothing listens on " + a)
}

// vegetaTargets writes a JSON targets file: GET /v1/verify on base with
// each key of keysFile (the first cfg.vegTargets, if set) in X-API-Key.
// vegeta reads the whole file at every start, so --quick uses fewer.
func vegetaTargets(keysFile, base, tag string) string {
	in, err := os.Open(keysFile)
	must(err)
	defer in.Close()
	name := filepath.Join(cfg.work, "targets-"+tag+".json")
	out, err := os.Create(name)
	must(err)
	w := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	url := "http://" + base + "/v1/verify"
	for n := 0; sc.Scan() && (cfg.vegTargets == 0 || n < cfg.vegTargets); n++ {
		b, _ := json.Marshal(map[string]any{"method": "GET", "url": url, "header": map[string][]string{"X-API-Key": {sc.Text()}}})
		w.Write(b)
		w.WriteByte('\n')
	}
	must(w.Flush())
	must(out.Close())
	return name
}

type latencies struct {
	p50, p99, p999 float64 // ms
	rate           float64 // answered requests per second
	ok             float64 // share of requests answered with 200 or 401
}

// vegeta attacks at a fixed rate (0: as fast as its workers can, closed
// loop) with a fixed pool of cfg.conns workers, one connection each, and
// computes percentiles from the raw results. (Letting vegeta add workers
// makes it open bursts of connections, and SYN retries then put a second
// into the tail of any server.)
func vegeta(targets string, rate int, d time.Duration) latencies {
	res := filepath.Join(cfg.work, "vegeta.bin")
	w := strconv.Itoa(cfg.conns)
	runCmd(cfg.vegeta, "attack", "-format=json", "-targets="+targets, "-rate="+strconv.Itoa(rate)+"/1s",
		"-duration="+secs(d), "-keepalive=true", "-workers="+w, "-max-workers="+w, "-output="+res)
	command(cfg.vegeta, "encode", "-to=csv", res)
	cmd := exec.Command(cfg.vegeta, "encode", "-to=csv", res)
	stdout, err := cmd.StdoutPipe()
	must(err)
	must(cmd.Start())
	r := csv.NewReader(bufio.NewReaderSize(stdout, 1<<20))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	var lat []float64
	total, ok := 0, 0
	var first, last int64
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		must(err)
		total++
		ts, _ := strconv.ParseInt(rec[0], 10, 64)
		if first == 0 || ts < first {
			first = ts
		}
		last = max(last, ts)
		code, _ := strconv.Atoi(rec[1])
		ns, _ := strconv.ParseFloat(rec[2], 64)
		lat = append(lat, ns/1e6)
		if code == 200 || code == 401 {
			ok++
		}
	}
	must(cmd.Wait())
	if total == 0 {
		panic("vegeta: no results")
	}
	sort.Float64s(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(math.Ceil(p*float64(len(lat))))-1)] }
	span := float64(last-first) / 1e9
	if span <= 0 {
		span = d.Seconds()
	}
	return latencies{p50: pct(0.50), p99: pct(0.99), p999: pct(0.999), rate: float64(ok) / span, ok: float64(ok) / float64(total)}
}
