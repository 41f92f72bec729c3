// Command grpc-resolver-probe is a Go gRPC client written the way kube-registrar's users write
// one: it dials etcd:///<prefix>/<namespace>/<service> through etcd's naming resolver
// (go.etcd.io/etcd/client/v3/naming/resolver) and calls the standard health service
// (grpc.health.v1.Health/Check) over and over. It prints one JSON object per line on stdout: what
// the resolver handed to grpc-go, and which address answered each call, so that a test can prove
// that the documented target resolves, that calls reach the registered servers, and that the
// client survives entries being rewritten and removed under it.
//
// The versions are those of tools/grpc-resolver-probe/go.mod: grpc-go 1.67, whose pick_first
// panics when two addresses with a JSON object in Metadata are compared (grpc/grpc-go#8225), and
// the newest etcd client that still works with it and still passes Metadata on (v3.5.21).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	gresolver "google.golang.org/grpc/resolver"
)

var (
	outMu sync.Mutex // the resolver's goroutine and the call loop both print
	out   = json.NewEncoder(os.Stdout)
)

// emit prints one event as a line of JSON.
func emit(event string, fields map[string]any) {
	fields["event"] = event
	fields["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(fields)
}

// reportingBuilder wraps etcd's resolver builder so that every state it hands to grpc-go is
// printed first.
type reportingBuilder struct {
	gresolver.Builder
}

func (b reportingBuilder) Build(target gresolver.Target, cc gresolver.ClientConn, opts gresolver.BuildOptions) (gresolver.Resolver, error) {
	return b.Builder.Build(target, reportingClientConn{cc}, opts)
}

type reportingClientConn struct {
	gresolver.ClientConn
}

func (c reportingClientConn) UpdateState(state gresolver.State) error {
	addrs := make([]map[string]any, 0, len(state.Addresses))
	for _, a := range state.Addresses {
		addrs = append(addrs, map[string]any{"addr": a.Addr, "metadataType": fmt.Sprintf("%T", a.Metadata)}) //nolint:staticcheck // Metadata is what this probe is about.
	}
	for _, e := range state.Endpoints {
		for _, a := range e.Addresses {
			addrs = append(addrs, map[string]any{"addr": a.Addr, "metadataType": fmt.Sprintf("%T", a.Metadata)}) //nolint:staticcheck
		}
	}
	emit("resolved", map[string]any{"addresses": addrs})
	return c.ClientConn.UpdateState(state)
}

func main() {
	etcdEndpoints := flag.String("etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	target := flag.String("target", "", "dial target, e.g. etcd:///grpc/prod/greeter")
	policy := flag.String("policy", "pick_first", "load-balancing policy: pick_first or round_robin")
	interval := flag.Duration("interval", 100*time.Millisecond, "time between calls")
	timeout := flag.Duration("timeout", 2*time.Second, "deadline of each call")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "grpc-resolver-probe: -target is required, e.g. -target etcd:///grpc/prod/greeter")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*etcdEndpoints, ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpc-resolver-probe: etcd client: %v\n", err)
		os.Exit(1)
	}
	defer cli.Close()
	builder, err := etcdresolver.NewBuilder(cli)
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpc-resolver-probe: etcd resolver: %v\n", err)
		os.Exit(1)
	}

	conn, err := grpc.NewClient(*target,
		grpc.WithResolvers(reportingBuilder{builder}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, *policy)),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpc-resolver-probe: dial %s: %v\n", *target, err)
		os.Exit(1)
	}
	defer conn.Close()
	emit("start", map[string]any{"target": *target, "policy": *policy, "grpcVersion": grpc.Version})

	health := healthpb.NewHealthClient(conn)
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for {
		callCtx, cancel := context.WithTimeout(ctx, *timeout)
		var p peer.Peer
		resp, err := health.Check(callCtx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		cancel()
		switch {
		case ctx.Err() != nil:
			// Stopped while the call ran: not a failure of the call.
		case err != nil:
			emit("call", map[string]any{"ok": false, "error": err.Error(), "state": conn.GetState().String()})
		default:
			addr := ""
			if p.Addr != nil {
				addr = p.Addr.String()
			}
			emit("call", map[string]any{"ok": true, "peer": addr, "status": resp.GetStatus().String()})
		}
		select {
		case <-ctx.Done():
			emit("stop", map[string]any{})
			return
		case <-ticker.C:
		}
	}
}
