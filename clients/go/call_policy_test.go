package placecheck_test

// The call policy against real sidecars (tests/test_other_language_clients.py starts them): the
// default deadline, gRPC's own retries paced by the sidecar's RetryInfo and Health.Watch against
// one without a fleet on one thread (PLACECHECK_EMPTY_*; the last test writes its fleet), and
// round_robin over the workers' own ports (PLACECHECK_WORKER_TARGET) of the shared sidecar.

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	placecheck "github.com/placecheck/placecheck/clients/go"
	pb "github.com/placecheck/placecheck/clients/go/gen/placecheck/v1"
)

const (
	retryHost              = "go-retry-1"
	unreachableGeneration  = 1_000_000_000          // a min_generation no write reaches: the sidecar waits for it
	noSnapshotRetryDelay   = 100 * time.Millisecond // server/errors.py: the RetryInfo of UNAVAILABLE NO_SNAPSHOT
	maxGenerationWait      = 2 * time.Second        // the sidecar's default --max-generation-wait
	workerCallsForSpread   = 200
	spreadCallerGoroutines = 8
)

// emptySidecar gives the decision and state targets of the sidecar without a fleet, or skips.
func emptySidecar(t *testing.T) (string, string) {
	t.Helper()
	decision, state := os.Getenv("PLACECHECK_EMPTY_DECISION_TARGET"), os.Getenv("PLACECHECK_EMPTY_STATE_TARGET")
	if decision == "" || state == "" {
		t.Skip("PLACECHECK_EMPTY_DECISION_TARGET and PLACECHECK_EMPTY_STATE_TARGET are not set (no sidecar without a fleet)")
	}
	return decision, state
}

// attempts records when each attempt of a call starts: grpc-go reports every attempt's Begin.
type attempts struct {
	mu     sync.Mutex
	starts []time.Time
}

func (a *attempts) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (a *attempts) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (a *attempts) HandleConn(context.Context, stats.ConnStats)                       {}
func (a *attempts) HandleRPC(_ context.Context, s stats.RPCStats) {
	if begin, ok := s.(*stats.Begin); ok && begin.IsClient() {
		a.mu.Lock()
		a.starts = append(a.starts, begin.BeginTime)
		a.mu.Unlock()
	}
}

func (a *attempts) times() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.starts...)
}

func policyClient(t *testing.T, target string, deadline time.Duration, retry placecheck.RetryPolicy,
	recorder *attempts) *placecheck.PlacementClient {
	t.Helper()
	client, err := placecheck.NewPlacementClient(target, 1, placecheck.WithCallPolicy(deadline, retry),
		grpc.WithStatsHandler(recorder))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func TestDefaultDeadline(t *testing.T) {
	decision, _ := emptySidecar(t)
	conn, err := grpc.NewClient(decision, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Holds the one thread for the sidecar's longest wait (2 s): the next call queues.
	held := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := pb.NewPlacementCheckClient(conn).CheckDestination(ctx, &pb.CheckDestinationRequest{
			Request: workload(512), Hosts: []string{retryHost}, MinGeneration: unreachableGeneration})
		held <- err
	}()
	time.Sleep(200 * time.Millisecond)
	client := policyClient(t, decision, 300*time.Millisecond, placecheck.NoRetries, &attempts{})
	started := time.Now()
	_, err = client.CheckDestination(context.Background(), workload(512), []string{retryHost}, 0)
	elapsed := time.Since(started)
	if status.Code(err) != codes.DeadlineExceeded || elapsed < 250*time.Millisecond || elapsed > time.Second {
		t.Fatalf("want DEADLINE_EXCEEDED after the 300 ms default deadline, got %v after %s", err, elapsed)
	}
	// With a longer default deadline the same call outlasts the held thread and gets the sidecar's
	// answer. (A context's deadline counts only when shorter: gRPC takes the earlier of the two.)
	patient := policyClient(t, decision, maxGenerationWait+5*time.Second, placecheck.NoRetries, &attempts{})
	if _, err := patient.CheckDestination(context.Background(), workload(512), []string{retryHost}, 0); status.Code(err) != codes.Unavailable {
		t.Fatalf("want UNAVAILABLE (no fleet) within the longer default deadline, got %v", err)
	}
	if err := <-held; status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("the holding call: want FAILED_PRECONDITION, got %v", err)
	}
}

func TestRetryInfoPacesRetries(t *testing.T) {
	decision, _ := emptySidecar(t)
	recorder := &attempts{}
	// gRPC's own backoff would wait at most 10 ms, then 20 ms: the sidecar's RetryInfo asks for 100 ms.
	policy := placecheck.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond, BackoffMultiplier: 2}
	client := policyClient(t, decision, 5*time.Second, policy, recorder)
	_, err := client.CheckDestination(context.Background(), workload(512), []string{retryHost}, 0)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("want UNAVAILABLE (no fleet), got %v", err)
	}
	starts := recorder.times()
	if len(starts) != 3 {
		t.Fatalf("want 3 attempts, got %d", len(starts))
	}
	for attempt := 1; attempt < len(starts); attempt++ {
		if gap := starts[attempt].Sub(starts[attempt-1]); gap < noSnapshotRetryDelay*9/10 {
			t.Errorf("attempt %d came %s after the one before: RetryInfo asked for %s", attempt, gap, noSnapshotRetryDelay)
		}
	}
}

func TestNoRetriesOneAttempt(t *testing.T) {
	decision, _ := emptySidecar(t)
	recorder := &attempts{}
	client := policyClient(t, decision, 5*time.Second, placecheck.NoRetries, recorder)
	if _, err := client.CheckDestination(context.Background(), workload(512), []string{retryHost}, 0); status.Code(err) != codes.Unavailable {
		t.Fatalf("want UNAVAILABLE (no fleet), got %v", err)
	}
	time.Sleep(300 * time.Millisecond) // a retry, had there been one, would have come 100 ms later
	if got := len(recorder.times()); got != 1 {
		t.Fatalf("want 1 attempt, got %d", got)
	}
}

// Last of the tests on the sidecar without a fleet: it writes one.
func TestWatchUntilTheFleetArrives(t *testing.T) {
	decision, stateTarget := emptySidecar(t)
	err := placecheck.WaitUntilServing(context.Background(), decision, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "NOT_SERVING") {
		t.Fatalf("want not serving, NOT_SERVING seen, got %v", err)
	}
	returned := make(chan time.Time, 1)
	go func() {
		if err := placecheck.WaitUntilServing(context.Background(), decision, 20*time.Second); err != nil {
			t.Error(err)
		}
		returned <- time.Now()
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-returned:
		t.Fatal("SERVING before any fleet")
	default:
	}
	state, err := placecheck.NewStateClient(stateTarget)
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	if _, err := state.ReplaceFleet(callContext(t), &pb.Fleet{Hosts: []*pb.Host{host(retryHost, 0, true)}}); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	select {
	case at := <-returned:
		if at.Sub(written) > time.Second {
			t.Fatalf("returned %s after the fleet was written", at.Sub(written))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("WaitUntilServing did not return once the fleet was written")
	}
}

// workerCalls reads placecheck_worker_calls_total per worker from the sidecar's metrics.
func workerCalls(t *testing.T, url string) map[string]float64 {
	t.Helper()
	reply, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer reply.Body.Close()
	body, err := io.ReadAll(reply.Body)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]float64{}
	pattern := regexp.MustCompile(`(?m)^placecheck_worker_calls_total\{worker="(\d+)"\} (\S+)$`)
	for _, match := range pattern.FindAllStringSubmatch(string(body), -1) {
		calls[match[1]], _ = strconv.ParseFloat(match[2], 64)
	}
	return calls
}

func TestWorkerTargetSpreadsOneChannelsCalls(t *testing.T) {
	f := sidecar(t)
	workerTarget, metricsURL := os.Getenv("PLACECHECK_WORKER_TARGET"), os.Getenv("PLACECHECK_METRICS_URL")
	if workerTarget == "" || metricsURL == "" {
		t.Skip("PLACECHECK_WORKER_TARGET and PLACECHECK_METRICS_URL are not set (no sidecar with --worker-ports)")
	}
	client, err := placecheck.NewPlacementClient(workerTarget, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	before := workerCalls(t, metricsURL)
	var group sync.WaitGroup
	errs := make(chan error, workerCallsForSpread)
	for caller := 0; caller < spreadCallerGoroutines; caller++ {
		group.Add(1)
		go func() {
			defer group.Done()
			for call := 0; call < workerCallsForSpread/spreadCallerGoroutines; call++ {
				if _, err := client.CheckDestination(context.Background(), workload(4096), []string{ours[0]}, f.generation); err != nil {
					errs <- err
				}
			}
		}()
	}
	group.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := workerCalls(t, metricsURL)
	if len(after) != 2 {
		t.Fatalf("want 2 workers' counts, got %v", after)
	}
	for worker, count := range after {
		if received := count - before[worker]; received < 0.45*workerCallsForSpread {
			t.Errorf("worker %s received %.0f of %d calls from one channel (all: %v -> %v)", worker, received,
				workerCallsForSpread, before, after)
		}
	}
}
