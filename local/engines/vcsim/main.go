// Command stowage-vcsim serves VMware's vSphere simulator (govmomi's simulator package, the
// VPX model: one datacenter DC0, a cluster, hosts, VMs and the datastore LocalDS_0) over plain
// HTTP for Stowage's tests and local mode. Unlike a bare simulator it checks the user name and
// password it is given: a client with the wrong ones gets InvalidLogin, as from a real vCenter.
//
// It prints one line, the SDK URL (http://HOST:PORT/sdk), once it serves, so a caller started it
// on port 0 learns the port. Each instance keeps its datastores in temporary directories
// (/tmp/govcsim-*) that it removes on SIGINT or SIGTERM, and, with -exit-on-stdin-eof, when its
// standard input closes (a test runner that dies without signalling it leaves nothing behind).
//
// Build (Debian's govmomi sources, no module download):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o stowage-vcsim ./local/engines/vcsim
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0: a free port)")
	user := flag.String("user", "", "the user name that logs in (required)")
	passwordFile := flag.String("password-file", "", "a file holding the password that logs in (required)")
	urlFile := flag.String("url-file", "", "also write the SDK URL to this file once serving")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "stop (and clean up) when standard input closes")
	flag.Parse()

	if *user == "" || *passwordFile == "" {
		log.Fatal("stowage-vcsim: -user and -password-file are required")
	}
	raw, err := os.ReadFile(*passwordFile)
	if err != nil {
		log.Fatalf("stowage-vcsim: reading the password file: %v", err)
	}
	password := strings.TrimRight(string(raw), "\r\n")
	if password == "" {
		log.Fatalf("stowage-vcsim: the password file %s is empty", *passwordFile)
	}

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("stowage-vcsim: creating the model: %v", err)
	}
	// The simulator's own login check compares against Listen.User when it is set.
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	server := model.Service.NewServer()

	stop := make(chan string, 2)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() { stop <- (<-signals).String() }()
	if *stdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "end of standard input"
		}()
	}

	sdk := *server.URL
	sdk.User = nil
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(sdk.String()+"\n"), 0o644); err != nil {
			server.Close()
			model.Remove()
			log.Fatalf("stowage-vcsim: writing %s: %v", *urlFile, err)
		}
	}
	fmt.Println(sdk.String())

	reason := <-stop
	log.Printf("stowage-vcsim: stopping (%s)", reason)
	server.Close()
	model.Remove()
}
