package chaos

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
)

// Net is the harness's network: one namespace per node slot, each with a
// veth pair into a bridge in the root namespace. The harness's clients run
// in the root namespace and reach every node through the bridge; faults are
// iptables rules inside the node namespaces, on node addresses only, so
// clients are never cut off.
type Net struct {
	Prefix string // namespace / interface name prefix, e.g. "krc"
	Subnet string // first three octets, e.g. "10.77.0"
	mu     sync.Mutex
	slots  []int
	Log    func(string)
}

const bridgeIP = 254

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *Net) bridge() string           { return n.Prefix + "br0" }
func (n *Net) NS(slot int) string       { return fmt.Sprintf("%s-n%d", n.Prefix, slot) }
func (n *Net) IP(slot int) string       { return fmt.Sprintf("%s.%d", n.Subnet, slot) }
func (n *Net) hostVeth(slot int) string { return fmt.Sprintf("%sv%d", n.Prefix, slot) }

// Setup creates the bridge.
func (n *Net) Setup() error {
	n.Teardown() // leftovers of a killed run
	for _, c := range [][]string{
		{"ip", "link", "add", n.bridge(), "type", "bridge"},
		{"ip", "addr", "add", fmt.Sprintf("%s.%d/24", n.Subnet, bridgeIP), "dev", n.bridge()},
		{"ip", "link", "set", n.bridge(), "up"},
	} {
		if err := run(c...); err != nil {
			return err
		}
	}
	// With br_netfilter loaded, bridged frames traverse the root
	// namespace's FORWARD chain: make sure it lets ours through.
	run("iptables", "-I", "FORWARD", "-i", n.bridge(), "-o", n.bridge(), "-j", "ACCEPT")
	return nil
}

// AddSlot creates the namespace of one node slot.
func (n *Net) AddSlot(slot int) error {
	ns, hv := n.NS(slot), n.hostVeth(slot)
	for _, c := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", hv, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "link", "set", hv, "master", n.bridge()},
		{"ip", "link", "set", hv, "up"},
		{"ip", "-n", ns, "addr", "add", n.IP(slot) + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
	} {
		if err := run(c...); err != nil {
			return err
		}
	}
	n.mu.Lock()
	n.slots = append(n.slots, slot)
	n.mu.Unlock()
	return nil
}

// Teardown removes every namespace and link with the prefix; safe to call
// more than once.
func (n *Net) Teardown() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (strings.HasPrefix(f[0], n.Prefix+"-n") || f[0] == n.probeNS()) {
			run("ip", "netns", "del", f[0])
		}
	}
	// Host ends of the veth pairs: deleting the namespace removes them only
	// once the kernel has destroyed it, which may be later.
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(links), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, n.Prefix+"v") {
				run("ip", "link", "del", name)
			}
		}
	}
	// The FORWARD rule goes whether or not the bridge is still there (a
	// killed run's trap may have deleted the bridge only): every copy of it.
	for run("iptables", "-D", "FORWARD", "-i", n.bridge(), "-o", n.bridge(), "-j", "ACCEPT") == nil {
	}
	if run("ip", "link", "show", n.bridge()) == nil {
		run("ip", "link", "del", n.bridge())
	}
}

// probeNS is the namespace NetemAvailable tries netem in.
func (n *Net) probeNS() string { return n.Prefix + "-probe" }

func (n *Net) ipt(slot int, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", n.NS(slot), "iptables", "-w"}, args...)...)
}

// Drop makes slot `to` drop every packet from slot `from` (one way).
func (n *Net) Drop(from, to int) error {
	return n.ipt(to, "-A", "INPUT", "-s", n.IP(from), "-j", "DROP")
}

// Undrop removes a Drop rule.
func (n *Net) Undrop(from, to int) error {
	return n.ipt(to, "-D", "INPUT", "-s", n.IP(from), "-j", "DROP")
}

// Loss drops a fraction of packets arriving at slot `to` from other nodes.
func (n *Net) Loss(to int, p float64) error {
	return n.ipt(to, "-A", "INPUT", "-m", "iprange", "--src-range", fmt.Sprintf("%s.1-%s.%d", n.Subnet, n.Subnet, bridgeIP-1),
		"-m", "statistic", "--mode", "random", "--probability", fmt.Sprint(p), "-j", "DROP")
}

// Heal flushes every rule and qdisc in every slot.
func (n *Net) Heal() {
	n.mu.Lock()
	slots := append([]int(nil), n.slots...)
	n.mu.Unlock()
	for _, s := range slots {
		n.ipt(s, "-F", "INPUT")
		run("ip", "netns", "exec", n.NS(s), "tc", "qdisc", "del", "dev", "eth0", "root")
	}
}

// Netem adds delay (and loss) on a slot's interface; it fails on kernels
// without sch_netem.
func (n *Net) Netem(slot int, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", n.NS(slot), "tc", "qdisc", "add", "dev", "eth0", "root", "netem"}, args...)...)
}

// Throttle puts a token bucket on a slot's outgoing traffic: past the
// burst, packets queue for up to latency behind the rate, then drop. On
// kernels without sch_netem (tbf is built in far more often) this is how
// the harness delays a node's messages.
func (n *Net) Throttle(slot int, rate, latency string) error {
	return run("ip", "netns", "exec", n.NS(slot), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
		"rate", rate, "burst", "16kbit", "latency", latency)
}

// NetemAvailable says whether tc netem works here.
func (n *Net) NetemAvailable() bool {
	ns := n.probeNS()
	if run("ip", "netns", "add", ns) != nil {
		return false
	}
	defer run("ip", "netns", "del", ns)
	run("ip", "-n", ns, "link", "set", "lo", "up")
	return run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms") == nil
}
