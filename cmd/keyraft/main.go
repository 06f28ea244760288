// Command keyraft is the keyraft server and its command-line client.
//
//	keyraft serve [flags]        run a node
//	keyraft keys …               manage keys (create|list|get|update|rotate|revoke|delete|import)
//	keyraft verify KEY [flags]   verify a key
//	keyraft cluster …            cluster status|remove|leave
//	keyraft snapshot …           back up (save) or restore the cluster's state
//	keyraft recover …            lost-quorum recovery of a stopped node, offline
//
// Client commands read KEYRAFT_ADDR (default http://127.0.0.1:8080) and KEYRAFT_TOKEN.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: keyraft <command> [arguments]

commands:
  serve     run a keyraft node (see keyraft serve -h)
  keys      manage keys: create | list | get | update | rotate | revoke | delete | import
  verify    verify a key: keyraft verify KEY [--scope S] [--resource R] [--origin O]
  cluster   the cluster: status | remove NODE_ID | leave
  snapshot  backups: save FILE | restore FILE
  recover   lost-quorum recovery, offline: keyraft recover --peers FILE --data-dir DIR
  version   print the version

Client commands talk to KEYRAFT_ADDR (default http://127.0.0.1:8080) with the
admin key in KEYRAFT_TOKEN, print a table (or JSON with --json), and exit
non-zero with the error on stderr when a call fails.
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:])
	case "keys":
		return runKeys(args[1:])
	case "verify":
		return runVerify(args[1:])
	case "cluster":
		return runCluster(args[1:])
	case "snapshot":
		return runSnapshot(args[1:])
	case "recover":
		return runRecover(args[1:])
	case "version", "--version":
		fmt.Println("keyraft", version)
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "keyraft: unknown command %q\n\n%s", args[0], usage)
	return 2
}
