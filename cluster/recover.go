package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/keyraft/keyraft/fsm"
)

// Peer is one entry of a peers.json file for Recover.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter"`
}

// Recover rewrites the Raft configuration of a stopped node's data dir to
// the servers in peersFile (lost-quorum recovery, raft.RecoverCluster). Run
// it on every surviving node with the same file, then start them.
func Recover(dataDir, peersFile string, logger hclog.Logger) error {
	b, err := os.ReadFile(peersFile)
	if err != nil {
		return err
	}
	var peers []Peer
	if err := json.Unmarshal(b, &peers); err != nil {
		return fmt.Errorf("%s: %w", peersFile, err)
	}
	var conf raft.Configuration
	voters := 0
	for i, p := range peers {
		if p.ID == "" || p.Address == "" {
			return fmt.Errorf("%s: peer %d needs an id and an address", peersFile, i)
		}
		s := raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: raft.Voter}
		if p.NonVoter {
			s.Suffrage = raft.Nonvoter
		} else {
			voters++
		}
		conf.Servers = append(conf.Servers, s)
	}
	if voters == 0 {
		return fmt.Errorf("%s: at least one peer must be a voter", peersFile)
	}
	idBytes, err := os.ReadFile(filepath.Join(dataDir, "node-id"))
	if err != nil {
		return fmt.Errorf("reading the node id of %s: %w", dataDir, err)
	}
	self := strings.TrimSpace(string(idBytes))
	if !slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == self }) {
		// Started outside its own configuration, the node would never
		// campaign: a mistyped id would leave the cluster without a leader.
		return fmt.Errorf("%s: this node (%s) is not among the peers", peersFile, self)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(self)
	rc.Logger = logger.Named("raft")
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("opening the raft log: %w", err)
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dataDir, "snapshots"), 2, logger.Named("snapshot"))
	if err != nil {
		return err
	}
	_, trans := raft.NewInmemTransport("")
	if err := raft.RecoverCluster(rc, fsm.New(), store, store, snaps, trans, conf); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("%s holds no raft state to recover", dataDir)
		}
		return err
	}
	// A node that started without state withholds its vote until it has
	// caught up with a leader (voteGuard), which protects what the old
	// cluster acknowledged. Recovering is the operator accepting that
	// loss, and the new configuration may need this node's vote to elect
	// a leader at all: without one it would never catch up.
	if err := os.Remove(filepath.Join(dataDir, withheldMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the configuration is recovered, but this node would still withhold its vote: %w", err)
	}
	return nil
}
