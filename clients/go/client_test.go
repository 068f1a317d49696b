package placecheck_test

// The Go client against the real sidecar, whose addresses come from the environment
// (tests/test_other_language_clients.py starts one and sets them), and, for round-robin over
// connections, against an in-process server that records each call's peer.

import (
	"context"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	placecheck "github.com/placecheck/placecheck/clients/go"
	pb "github.com/placecheck/placecheck/clients/go/gen/placecheck/v1"
)

const (
	timeout  = 10 * time.Second
	trait    = "CUSTOM_GO_CLIENT_TEST" // only this file's hosts have it
	channels = 4
)

var ours = []string{"go-client-ok-1", "go-client-ok-2", "go-client-ok-3"}

func host(name string, memoryUsed int64, enabled bool) *pb.Host {
	return &pb.Host{
		Name: name, Enabled: proto.Bool(enabled), Traits: []string{trait},
		Resources: map[string]*pb.Inventory{
			"VCPU":      {Total: 16, AllocationRatio: proto.Float64(4.0)},
			"MEMORY_MB": {Total: 32768, Used: memoryUsed},
			"DISK_GB":   {Total: 500},
		},
	}
}

func workload(memoryMB int64) *pb.PlacementRequest {
	return &pb.PlacementRequest{
		Resources:      map[string]int64{"VCPU": 2, "MEMORY_MB": memoryMB, "DISK_GB": 20},
		RequiredTraits: []string{trait},
	}
}

type fixture struct {
	decisionTarget string
	placement      *placecheck.PlacementClient
	state          *placecheck.StateClient
	generation     uint64
}

var (
	setupOnce sync.Once
	shared    *fixture
	setupErr  error
)

// sidecar gives the shared clients, after adding this file's hosts once; it skips the test
// when the environment names no sidecar.
func sidecar(t *testing.T) *fixture {
	t.Helper()
	decision, state := os.Getenv("PLACECHECK_DECISION_TARGET"), os.Getenv("PLACECHECK_STATE_TARGET")
	if decision == "" || state == "" {
		t.Skip("PLACECHECK_DECISION_TARGET and PLACECHECK_STATE_TARGET are not set (no sidecar to talk to)")
	}
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if setupErr = placecheck.WaitUntilServing(ctx, decision, timeout); setupErr != nil {
			return
		}
		f := &fixture{decisionTarget: decision}
		if f.placement, setupErr = placecheck.NewPlacementClient(decision, channels); setupErr != nil {
			return
		}
		if f.state, setupErr = placecheck.NewStateClient(state); setupErr != nil {
			return
		}
		f.generation, setupErr = f.state.UpsertHosts(ctx, []*pb.Host{
			host(ours[0], 0, true), host(ours[1], 0, true), host(ours[2], 0, true),
			host("go-client-full", 30000, false),
		})
		shared = f
	})
	if setupErr != nil {
		t.Fatalf("setting up against the sidecar: %v", setupErr)
	}
	return shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		if _, err := shared.state.RemoveHosts(ctx, append(slices.Clone(ours), "go-client-full")); err != nil {
			println("removing the test hosts:", err.Error())
			code = 1
		}
		cancel()
		shared.placement.Close()
		shared.state.Close()
	}
	os.Exit(code)
}

func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func TestStatus(t *testing.T) {
	f := sidecar(t)
	got, err := f.state.Status(callContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.GetGeneration() < f.generation || got.GetHostCount() < 4 {
		t.Fatalf("status %v, want generation >= %d and >= 4 hosts", got, f.generation)
	}
}

func TestAllowedHost(t *testing.T) {
	f := sidecar(t)
	answer, err := f.placement.CheckDestination(callContext(t), workload(4096), []string{ours[0]}, f.generation)
	if err != nil {
		t.Fatal(err)
	}
	if answer.GetGeneration() < f.generation || answer.GetDecisionId() == "" {
		t.Fatalf("generation %d (want >= %d), decision id %q", answer.GetGeneration(), f.generation, answer.GetDecisionId())
	}
	verdicts := answer.GetVerdicts()
	if len(verdicts) != 1 || verdicts[0].GetHost() != ours[0] || !verdicts[0].GetAllowed() || len(verdicts[0].GetRejections()) != 0 {
		t.Fatalf("verdicts %v, want %s allowed", verdicts, ours[0])
	}
	if !slices.Contains(verdicts[0].GetRulesEvaluated(), "resource:MEMORY_MB") {
		t.Fatalf("rules evaluated %v", verdicts[0].GetRulesEvaluated())
	}
}

func TestRefusedHostWithRulesAndReasons(t *testing.T) {
	f := sidecar(t)
	answer, err := f.placement.CheckDestination(callContext(t), workload(4096), []string{ours[0], "go-client-full"}, f.generation)
	if err != nil {
		t.Fatal(err)
	}
	verdicts := answer.GetVerdicts()
	if len(verdicts) != 2 || !verdicts[0].GetAllowed() || verdicts[1].GetAllowed() {
		t.Fatalf("verdicts %v, want allowed then refused", verdicts)
	}
	var got [][2]string
	for _, rejection := range verdicts[1].GetRejections() {
		got = append(got, [2]string{rejection.GetRule(), rejection.GetReason()})
	}
	want := [][2]string{{"resource:MEMORY_MB", "INSUFFICIENT_CAPACITY"}, {"ComputeFilter", "SERVICE_DISABLED"}}
	if !slices.Equal(got, want) {
		t.Fatalf("rejections %v, want %v", got, want)
	}
	memory := verdicts[1].GetRejections()[0]
	if !strings.Contains(memory.GetMessage(), "requested 4096, free 2768 of capacity 32768") {
		t.Fatalf("message %q", memory.GetMessage())
	}
	numbers := memory.GetNumbers()
	if numbers.GetRequested() != 4096 || numbers.GetFree() != 2768 || numbers.GetUsed() != 30000 || numbers.Actual != nil {
		t.Fatalf("numbers %v", numbers)
	}
}

func TestSelectWithAlternates(t *testing.T) {
	f := sidecar(t)
	request := workload(4096)
	request.NumInstances = 2
	answer, err := f.placement.SelectDestinations(callContext(t), &pb.SelectDestinationsRequest{
		Request: request, MaxAlternates: proto.Int32(1), MinGeneration: f.generation,
	})
	if err != nil {
		t.Fatal(err)
	}
	summary := answer.GetSummary()
	if summary.GetInstancesRequested() != 2 || summary.GetInstancesPlaced() != 2 || summary.GetHostsPassed() != 3 {
		t.Fatalf("summary %v", summary)
	}
	if len(answer.GetPlacements()) != 2 {
		t.Fatalf("placements %v", answer.GetPlacements())
	}
	for _, placement := range answer.GetPlacements() {
		selected, alternates := placement.GetSelected(), placement.GetAlternates()
		if !slices.Contains(ours, selected.GetHost()) || len(selected.GetWeighers()) == 0 {
			t.Fatalf("selected %v", selected)
		}
		if len(alternates) != 1 || !slices.Contains(ours, alternates[0].GetHost()) || alternates[0].GetHost() == selected.GetHost() {
			t.Fatalf("alternates %v of %s", alternates, selected.GetHost())
		}
	}
	for _, elimination := range summary.GetEliminations() {
		if elimination.GetRule() == "RequiredTraits" && elimination.GetHosts() != summary.GetHostsEvaluated()-4 {
			t.Fatalf("RequiredTraits eliminated %d of %d", elimination.GetHosts(), summary.GetHostsEvaluated())
		}
	}
}

func TestSelectThatNothingFits(t *testing.T) {
	f := sidecar(t)
	answer, err := f.placement.SelectDestinations(callContext(t), &pb.SelectDestinationsRequest{
		Request: workload(1_000_000), MinGeneration: f.generation,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(answer.GetPlacements()) != 0 || answer.GetSummary().GetHostsPassed() != 0 ||
		!regexp.MustCompile(`^0/\d+ hosts fit: .*resource:MEMORY_MB`).MatchString(answer.GetSummary().GetMessage()) {
		t.Fatalf("answer %v", answer)
	}
}

func TestInvalidArgumentDecodedToItsField(t *testing.T) {
	f := sidecar(t)
	_, err := f.placement.CheckDestination(callContext(t),
		&pb.PlacementRequest{Resources: map[string]int64{"VCPU": -1}}, []string{ours[0]}, 0)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error %v, want INVALID_ARGUMENT", err)
	}
	violations := placecheck.BadRequestViolations(err)
	if !slices.ContainsFunc(violations, func(v placecheck.FieldViolation) bool {
		return v.Field == "request.resources[VCPU]" && v.Description != ""
	}) {
		t.Fatalf("violations %v, want request.resources[VCPU]", violations)
	}
}

func TestUnknownHostIsNotFound(t *testing.T) {
	f := sidecar(t)
	_, err := f.placement.CheckDestination(callContext(t), workload(4096), []string{"go-client-no-such-host"}, 0)
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "go-client-no-such-host") {
		t.Fatalf("error %v, want NOT_FOUND naming the host", err)
	}
	if violations := placecheck.BadRequestViolations(err); violations != nil {
		t.Fatalf("violations %v on NOT_FOUND", violations)
	}
}

// connectionsTo counts this process's established TCP connections to port (Linux /proc).
func connectionsTo(t *testing.T, port int) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(link, "socket:[") {
			sockets[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	count := 0
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for _, line := range lines[1:] {
			fields := strings.Fields(line)
			remote := strings.Split(fields[2], ":")
			remotePort, _ := strconv.ParseInt(remote[len(remote)-1], 16, 32)
			if int(remotePort) == port && fields[3] == "01" && sockets[fields[9]] {
				count++
			}
		}
	}
	return count
}

func TestOneConnectionPerChannelToTheSidecar(t *testing.T) {
	f := sidecar(t)
	_, portText, err := net.SplitHostPort(f.decisionTarget)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portText)
	before := connectionsTo(t, port) // the shared client's
	client, err := placecheck.NewPlacementClient(f.decisionTarget, channels)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for call := 0; call < 2*channels; call++ {
		if _, err := client.CheckDestination(callContext(t), workload(4096), []string{ours[0]}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if opened := connectionsTo(t, port) - before; opened != channels {
		t.Fatalf("%d connections opened, want %d", opened, channels)
	}
}

type peerRecorder struct {
	pb.UnimplementedPlacementCheckServer
	mu    sync.Mutex
	peers []string
}

func (r *peerRecorder) CheckDestination(ctx context.Context, _ *pb.CheckDestinationRequest) (*pb.CheckDestinationResponse, error) {
	p, _ := peer.FromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = append(r.peers, p.Addr.String())
	return &pb.CheckDestinationResponse{}, nil
}

func TestCallsRotateOverOneConnectionPerChannel(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recorder := &peerRecorder{}
	server := grpc.NewServer()
	pb.RegisterPlacementCheckServer(server, recorder)
	go server.Serve(listener)
	defer server.Stop()

	client, err := placecheck.NewPlacementClient(listener.Addr().String(), channels)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if client.Connections() != channels {
		t.Fatalf("%d connections, want %d", client.Connections(), channels)
	}
	for call := 0; call < 2*channels; call++ {
		if _, err := client.CheckDestination(callContext(t), workload(4096), []string{"host0"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	distinct := slices.Compact(slices.Sorted(slices.Values(recorder.peers)))
	if len(distinct) != channels || !slices.Equal(recorder.peers[:channels], recorder.peers[channels:]) {
		t.Fatalf("peers %v, want %d distinct, repeating in order", recorder.peers, channels)
	}
}

func TestWaitUntilServingTimesOutOnAClosedPort(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close()
	started := time.Now()
	err = placecheck.WaitUntilServing(context.Background(), address, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not serving") {
		t.Fatalf("error %v, want not serving", err)
	}
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Fatalf("took %s", elapsed)
	}
}

// TestTLSAndTokenOptions calls a sidecar that requires mutual TLS and admits the identity
// "conductor" only (tests/test_other_language_clients.py): the certificate given here is another
// identity's, so the call gets through only with conductor's bearer token.
func TestTLSAndTokenOptions(t *testing.T) {
	target, ca := os.Getenv("PLACECHECK_TLS_DECISION_TARGET"), os.Getenv("PLACECHECK_TLS_CA")
	cert, key, token := os.Getenv("PLACECHECK_TLS_CERT"), os.Getenv("PLACECHECK_TLS_KEY"), os.Getenv("PLACECHECK_TOKEN")
	if target == "" || ca == "" || cert == "" || key == "" || token == "" {
		t.Skip("PLACECHECK_TLS_DECISION_TARGET, _CA, _CERT, _KEY and PLACECHECK_TOKEN are not set (no TLS sidecar)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	withCert, err := placecheck.WithTLS(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	withoutCert, err := placecheck.WithTLS(ca, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := placecheck.WaitUntilServing(ctx, target, timeout, withCert); err != nil {
		t.Fatal(err)
	}
	for _, attempt := range []struct {
		name string
		opts []grpc.DialOption
		want codes.Code
	}{
		{"certificate of an identity not admitted", []grpc.DialOption{withCert}, codes.PermissionDenied},
		{"that certificate and an admitted token", []grpc.DialOption{withCert, placecheck.WithToken(token)}, codes.OK},
		{"no client certificate", []grpc.DialOption{withoutCert, placecheck.WithToken(token)}, codes.Unavailable},
	} {
		client, err := placecheck.NewPlacementClient(target, 1, attempt.opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.CheckDestination(ctx, &pb.PlacementRequest{Resources: map[string]int64{"VCPU": 1}},
			[]string{"compute-00000"}, 0)
		client.Close()
		if got := status.Code(err); got != attempt.want {
			t.Errorf("%s: %v, want %v (%v)", attempt.name, got, attempt.want, err)
		}
	}
}
