package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/test/testenv"
)

// startNATSCluster starts n nats-server processes with JetStream, each
// with a store of its own, routed to one another as one cluster. A node's
// server name is its process name, which is what JetStream reports as a
// stream's leader.
func (p *Pipeline) startNATSCluster(bins, dir string, n int) {
	p.tb.Helper()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	routes := make([]string, n)
	for i := range n {
		clientPorts[i], routePorts[i] = testenv.FreePort(p.tb), testenv.FreePort(p.tb)
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(routePorts[i])
	}
	urls := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("%s-%d", natsServer, i+1)
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(clientPorts[i])
		p.NATSNodes = append(p.NATSNodes, &Process{
			Name: name,
			Log:  filepath.Join(dir, name+".log"),
			URL:  urls[i],
			bin:  filepath.Join(bins, natsServer),
			args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]), "-js", "-sd", filepath.Join(dir, "jetstream-"+strconv.Itoa(i+1)),
				"--name", name, "--cluster_name", "stormweir-pipeline", "--cluster", routes[i], "--routes", strings.Join(routes, ",")},
		})
	}
	p.NATS = p.NATSNodes[0]
	p.NATSURL = strings.Join(urls, ",")
	for _, node := range p.NATSNodes {
		p.startNATS(node)
	}
}

// waitJetStream waits until JetStream answers on the harness's
// connection: a cluster has elected its meta leader.
func (p *Pipeline) waitJetStream(within time.Duration) {
	p.tb.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := p.JS.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("JetStream not available within %s: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Instances returns the process names of stage's replicas, in start
// order.
func (p *Pipeline) Instances(stage string) []string {
	var out []string
	for _, name := range p.Names {
		if p.Procs[name].Stage == stage {
			out = append(out, name)
		}
	}
	return out
}

// NATSNode returns the cluster node whose server name is name, nil when
// there is none.
func (p *Pipeline) NATSNode(name string) *Process {
	for _, n := range p.NATSNodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// StreamLeader returns the nats-server node that leads stream kind
// (bus.StreamSignals, ...) now.
func (p *Pipeline) StreamLeader(ctx context.Context, kind string) (*Process, error) {
	info, err := p.streamInfo(ctx, kind)
	if err != nil {
		return nil, err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Errorf("stream %s has no leader", kind)
	}
	n := p.NATSNode(info.Cluster.Leader)
	if n == nil {
		return nil, fmt.Errorf("stream %s is led by %s, not a node of the pipeline", kind, info.Cluster.Leader)
	}
	return n, nil
}

func (p *Pipeline) streamInfo(ctx context.Context, kind string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := p.JS.Stream(ctx, p.subj.StreamName(kind))
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", kind, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", kind, err)
	}
	return info, nil
}

// KillNATSNode SIGKILLs a node of the cluster.
func (p *Pipeline) KillNATSNode(n *Process) { n.Kill() }

// StartNATSNode starts a killed node again on its port and store, and
// waits until every stream has a leader and all its replicas, the
// restarted one included, are current: the node has caught up.
func (p *Pipeline) StartNATSNode(n *Process, within time.Duration) {
	p.tb.Helper()
	p.startNATS(n)
	p.WaitStreamsCurrent(within)
}

// WaitStreamsCurrent waits until every stream has a leader and every one
// of its replicas on a running node is current.
func (p *Pipeline) WaitStreamsCurrent(within time.Duration) {
	p.tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := p.streamsCurrent(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("streams not current within %s: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *Pipeline) streamsCurrent(ctx context.Context) error {
	for _, kind := range []string{bus.StreamSignals, bus.StreamIncidents, bus.StreamDLQ, bus.StreamSignalsArchive, bus.StreamIncidentsArchive} {
		info, err := p.streamInfo(ctx, kind)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("stream %s has no leader", kind)
		}
		if n := p.NATSNode(info.Cluster.Leader); n == nil || n.Pid() == 0 {
			return fmt.Errorf("stream %s is led by %s, which is not running", kind, info.Cluster.Leader)
		}
		for _, r := range info.Cluster.Replicas {
			n := p.NATSNode(r.Name)
			if n != nil && n.Pid() != 0 && (!r.Current || r.Offline) {
				return fmt.Errorf("stream %s: replica %s is not current", kind, r.Name)
			}
		}
	}
	return nil
}

// WaitSignals waits until the signals stream holds at least n signals,
// so a test injects its fault at a point of the load rather than at a
// time. Errors while a fault lasts are retried until within passes.
func (p *Pipeline) WaitSignals(n uint64, within time.Duration) {
	p.tb.Helper()
	deadline := time.Now().Add(within)
	var last error
	for {
		info, err := p.streamInfo(context.Background(), bus.StreamSignals)
		// The sequence counts every signal stored; the stream itself
		// lets go of the processed ones.
		if err == nil && info.State.LastSeq >= n {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("the signals stream did not reach %d signals within %s (last error: %v)", n, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
