package cluster

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/keyraft/keyraft/fsm"
	"github.com/keyraft/keyraft/keyindex"
)

// Housekeeping configures the node's background work.
type Housekeeping struct {
	// RootToken, when set, is the plaintext root key a new cluster is created
	// with (from --root-key-file); otherwise one is generated.
	RootToken string
	// AnnounceRootKey is called with the plaintext of a generated root key,
	// once, on the node that created it. It must not log the key anywhere
	// but the operator's terminal.
	AnnounceRootKey func(plaintext string)
	// UsageFlushInterval is how often verification usage becomes a command.
	UsageFlushInterval time.Duration
	// UsageMaxKeysPerSec bounds, on average, how many keys a second this
	// node's usage flushes propose (0: no bound): after a flush of more
	// keys than the interval allows, the next one waits longer (usageWait).
	UsageMaxKeysPerSec int
	// PurgeInterval is how often the leader drops ended rotation grace periods.
	PurgeInterval time.Duration
}

// usageChunk bounds one usage command so a busy node never proposes a huge entry.
const usageChunk = 1000

// StartHousekeeping runs the leader's duties (create the root key of a new
// cluster, purge ended rotations) and every node's usage flush, until Shutdown.
func (n *Node) StartHousekeeping(h Housekeeping) error {
	if h.RootToken != "" {
		if _, info, err := keyindex.TokenFromPlaintext(h.RootToken); err != nil || info.Type != keyindex.TypeAdmin {
			return fmt.Errorf("root key file: not a well-formed admin key (rk_…)")
		}
	}
	if h.UsageFlushInterval <= 0 {
		h.UsageFlushInterval = 5 * time.Second
	}
	if h.PurgeInterval <= 0 {
		h.PurgeInterval = 10 * time.Second
	}
	n.wg.Add(2)
	go n.leaderLoop(h)
	go n.usageLoop(h.UsageFlushInterval, h.UsageMaxKeysPerSec)
	return nil
}

// reconcileEvery is the period of the leader's full reconciliation pass
// (membership events trigger one at once): 10 s, or half the reap time when
// that is shorter, so a dead member is reaped close to --reap-after.
func (n *Node) reconcileEvery() time.Duration {
	return min(10*time.Second, max(n.cfg.ReapAfter/2, time.Second))
}

func (n *Node) leaderLoop(h Housekeeping) {
	defer n.wg.Done()
	fast := time.NewTicker(100 * time.Millisecond)
	defer fast.Stop()
	lastPurge := time.Now()
	rc := newReconciler()
	reconcileDue := false // an event or the period asked for a pass not run yet
	var changed <-chan struct{}
	hadState := n.hasState()
	if n.gossip != nil {
		changed = n.gossip.changed
	}
	for {
		event := false
		select {
		case <-n.stop:
			return
		case <-fast.C:
		case <-changed:
			event = true
		}
		if n.gossip != nil {
			if n.hasState() != hadState {
				// Joined a cluster: tell the others, so they never count
				// this node into a new bootstrap.
				hadState = !hadState
				n.gossip.announce()
			}
			n.announceProgress()
		}
		if !n.IsLeader() {
			rc.leaderTerm = 0
			continue
		}
		term := n.raft.CurrentTerm()
		becameLeader := term != rc.leaderTerm
		rc.leaderTerm = term
		if becameLeader {
			// What an earlier term observed is not this term's evidence.
			rc.forget()
		}
		due := !rc.wakeAt.IsZero() && !time.Now().Before(rc.wakeAt)
		if event || becameLeader || due || time.Since(rc.lastFull) >= n.reconcileEvery() {
			reconcileDue = true
		}
		// A new leader may not have applied its whole log yet (right
		// after a restart it replays it): until it has, its state may be
		// stale. Acting on a stale "not initialized" would make a second
		// root key, and reconciling before it has applied an operator's
		// removal of a node would add that node back. Tried again on every
		// tick until it works.
		if n.CaughtUpAsLeader() != nil {
			continue
		}
		if reconcileDue {
			reconcileDue = false
			rc.lastFull = time.Now()
			n.reconcile(rc)
		}
		if !n.fsm.Initialized() {
			if err := createRootKey(h, n.Apply, n.log); err != nil {
				n.log.Error("creating the root key failed; will retry", "error", err)
			}
		}
		if time.Since(lastPurge) >= h.PurgeInterval {
			lastPurge = time.Now()
			n.purgeRotations()
		}
	}
}

// createRootKey makes the first root admin key of a new cluster through
// apply (Node.Apply), and announces a token it generated once the key is
// created, or may have been.
func createRootKey(h Housekeeping, apply func(*fsm.Command) (*fsm.Result, uint64, error), log hclog.Logger) error {
	var tok keyindex.Token
	var err error
	if h.RootToken != "" {
		tok, _, err = keyindex.TokenFromPlaintext(h.RootToken)
	} else {
		tok, err = keyindex.GenerateToken(rand.Reader, "", keyindex.TypeAdmin, keyindex.EnvLive)
	}
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	id, err := keyindex.NewID(now, rand.Reader)
	if err != nil {
		return err
	}
	rec := &keyindex.Record{
		ID: id, WorkspaceID: keyindex.RootWorkspace, Name: "root",
		Type: keyindex.TypeAdmin, Environment: keyindex.EnvLive,
		Scopes: append([]string(nil), keyindex.AdminScopes...), Active: true,
		AllowedOrigins: []string{}, AllowedResources: []string{}, Metadata: map[string]string{},
		CreatedAt: now, UpdatedAt: now, CreatedBy: "bootstrap",
	}
	rec.SetToken(tok)
	cmd := &fsm.Command{Op: fsm.OpCreate, Record: fsm.Store(rec), Bootstrap: true,
		Audit: &fsm.AuditEntry{Time: now, ActorKeyID: "bootstrap", WorkspaceID: keyindex.RootWorkspace, Action: "key.create", Target: id}}
	announce := func() {
		if h.RootToken == "" && h.AnnounceRootKey != nil {
			h.AnnounceRootKey(tok.Plaintext)
		}
	}
	res, _, err := apply(cmd)
	if errors.Is(err, ErrOutcomeUnknown) {
		// A later leader may commit this key, and then no other root key
		// is made: its token must not be lost with the answer.
		log.Warn("the root key's creation may or may not commit; if the cluster turns out initialized with this key id, the token printed is its root key",
			"key_id", id, "preview", tok.Preview)
		announce()
		return err
	}
	if err != nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	log.Info("cluster initialized with a root key", "key_id", id, "preview", tok.Preview)
	announce()
	return nil
}

func (n *Node) purgeRotations() {
	now := time.Now().UTC()
	ids := n.fsm.Index().ExpiredRotations(now.UnixNano())
	if len(ids) == 0 {
		return
	}
	if _, _, err := n.Apply(&fsm.Command{Op: fsm.OpPurgeRotations, IDs: ids, Time: now}); err != nil {
		n.log.Warn("purging ended rotations failed", "error", err)
	}
}

// usageLoop turns this node's verification counts into usage commands.
// Counts that cannot be proposed (no leader reachable) are kept and merged
// into the next flush rather than dropped.
func (n *Node) usageLoop(every time.Duration, maxKeysPerSec int) {
	defer n.wg.Done()
	t := time.NewTimer(every)
	defer t.Stop()
	pending := map[string]fsm.Usage{}
	for {
		select {
		case <-n.stop:
			n.flushUsage(pending) // last chance: counts since the previous flush
			return
		case <-t.C:
			start := time.Now()
			keys := n.flushUsage(pending)
			t.Reset(max(0, usageWait(every, keys, maxKeysPerSec)-time.Since(start)))
		}
	}
}

// usageWait is the time from the start of a flush of keys keys to the
// next: the interval, or longer for a flush of more keys than
// maxKeysPerSec allows in it. Every key a node flushes is a record
// rewritten by every node, through the Raft log: at the HTTP benchmark's
// load (100,000 keys, each verified within every 5 s) the usage pipeline
// was a tenth of a node's CPU even with hand-written commands
// (bench/README.md, session 14), and a node verifying a million distinct
// keys in 5 s would propose 200,000 rewrites a second. The bound stretches
// the interval instead, so last_used_at lags more only under such load:
// by at most keys/maxKeysPerSec.
func usageWait(interval time.Duration, keys, maxKeysPerSec int) time.Duration {
	if maxKeysPerSec <= 0 {
		return interval
	}
	return max(interval, time.Duration(keys)*time.Second/time.Duration(maxKeysPerSec))
}

// flushUsage proposes the usage counted since the last flush, with any
// left pending by earlier ones, and returns how many keys it sent (or
// dropped, their outcome unknown): those kept for a later flush (no
// leader) cost Raft nothing and do not delay it.
func (n *Node) flushUsage(pending map[string]fsm.Usage) int {
	for _, u := range n.fsm.Index().DrainUsage() {
		p := pending[u.ID]
		p.ID = u.ID
		p.Count += u.Count
		if t := time.Unix(0, u.LastUsedNs).UTC(); t.After(p.LastUsedAt) {
			p.LastUsedAt = t
		}
		pending[u.ID] = p
	}
	keys := len(pending)
	dropped, err := sendUsage(pending, n.proposeUsage)
	if dropped > 0 {
		// It may still commit: sending it again could count these
		// verifications twice. Counts are dropped rather than doubled.
		n.log.Warn("a usage flush's outcome is unknown; its counts are not sent again", "keys", dropped)
	}
	if err != nil {
		n.log.Debug("usage flush deferred", "error", err, "keys", len(pending))
	}
	return keys - len(pending)
}

// sendUsage proposes the pending counts in batches of usageChunk and
// forgets those proposed, and those whose outcome is unknown (it returns
// how many of those). At the first batch that fails outright it stops and
// returns the error: that batch and the rest stay pending for the next
// flush.
func sendUsage(pending map[string]fsm.Usage, propose func([]fsm.Usage) error) (unknown int, err error) {
	batch := make([]fsm.Usage, 0, min(len(pending), usageChunk))
	send := func() bool {
		switch perr := propose(batch); {
		case errors.Is(perr, ErrOutcomeUnknown):
			unknown += len(batch)
		case perr != nil:
			err = perr
			return false
		}
		for _, u := range batch {
			delete(pending, u.ID)
		}
		batch = batch[:0]
		return true
	}
	for _, u := range pending {
		batch = append(batch, u)
		if len(batch) == usageChunk && !send() {
			return unknown, err
		}
	}
	if len(batch) > 0 {
		send()
	}
	return unknown, err
}

// proposeUsage applies a usage command on the leader; a follower sends the
// batch to the leader over gossip (encrypted and authenticated by the
// gossip key), so usage never needs an HTTP credential.
func (n *Node) proposeUsage(batch []fsm.Usage) error {
	if n.IsLeader() || n.gossip == nil {
		_, _, err := n.Apply(&fsm.Command{Op: fsm.OpUsage, Usage: batch})
		return err
	}
	_, leaderID := n.Leader()
	if leaderID == "" {
		return ErrNotLeader
	}
	b, err := json.Marshal(batch)
	if err != nil {
		return err
	}
	return n.gossip.send(leaderID, append([]byte{msgUsage}, b...))
}
