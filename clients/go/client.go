// Package placecheck is a thin Go client for the placecheck sidecar: PlacementClient asks where a
// workload may go (placecheck.v1.PlacementCheck), StateClient feeds the fleet
// (placecheck.v1.FleetState). The messages are the ones generated from proto/ into
// gen/placecheck/v1 (make go-client; committed, so that `go get` finds them); the client depends
// on nothing of the engine or the server.
package placecheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	pb "github.com/placecheck/placecheck/clients/go/gen/placecheck/v1"
)

// DefaultDecisionTarget is where the sidecar serves PlacementCheck by default.
const DefaultDecisionTarget = "127.0.0.1:50051"

// DefaultDeadline is the deadline of a call whose context has none: above the sidecar's longest
// min_generation wait (2 s).
const DefaultDeadline = 5 * time.Second

// DefaultReplaceDeadline is ReplaceFleet's: a whole fleet of 100,000 hosts takes about 15 s.
const DefaultReplaceDeadline = 60 * time.Second

// RetryPolicy is gRPC's own retry policy (the service config's) for UNAVAILABLE and
// RESOURCE_EXHAUSTED. When a refusal carries a google.rpc.RetryInfo (no fleet yet: 100 ms; the
// store full or failing: 1 s) the sidecar also sends its delay as gRPC's retry pushback
// (grpc-retry-pushback-ms), which replaces the backoff. FleetState's writes are retried too: each
// replaces or removes by name, so sending one again changes nothing more. grpc-go makes at most 5
// attempts.
type RetryPolicy struct {
	MaxAttempts       int // the first included; 1: no retries
	InitialBackoff    time.Duration
	MaxBackoff        time.Duration
	BackoffMultiplier float64
}

// DefaultRetryPolicy: 5 attempts, backoff 0.1 s doubling up to 2 s.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond,
	MaxBackoff: 2 * time.Second, BackoffMultiplier: 2}

// NoRetries makes one attempt only.
var NoRetries = RetryPolicy{MaxAttempts: 1}

// retryableCodes are what the retry policy retries; other codes are answers, not transient failures.
var retryableCodes = []string{"UNAVAILABLE", "RESOURCE_EXHAUSTED"}

// ServiceConfig is gRPC's service config (JSON) for both placecheck services: round_robin over the
// target's addresses, defaultDeadline for a call without a deadline (DefaultReplaceDeadline at
// least for ReplaceFleet) and the retry policy.
func ServiceConfig(defaultDeadline time.Duration, retry RetryPolicy) string {
	methodConfig := func(deadline time.Duration, names ...map[string]string) map[string]any {
		config := map[string]any{"name": names, "timeout": seconds(deadline)}
		if retry.MaxAttempts > 1 { // gRPC refuses a retry policy of fewer than 2 attempts
			config["retryPolicy"] = map[string]any{
				"maxAttempts": retry.MaxAttempts, "initialBackoff": seconds(retry.InitialBackoff),
				"maxBackoff": seconds(retry.MaxBackoff), "backoffMultiplier": retry.BackoffMultiplier,
				"retryableStatusCodes": retryableCodes,
			}
		}
		return config
	}
	placement, state := pb.PlacementCheck_ServiceDesc.ServiceName, pb.FleetState_ServiceDesc.ServiceName
	config, _ := json.Marshal(map[string]any{
		"loadBalancingConfig": []any{map[string]any{"round_robin": map[string]any{}}},
		"methodConfig": []any{
			methodConfig(defaultDeadline, map[string]string{"service": placement}, map[string]string{"service": state}),
			methodConfig(max(defaultDeadline, DefaultReplaceDeadline), map[string]string{"service": state, "method": "ReplaceFleet"}),
		},
	})
	return string(config)
}

func seconds(duration time.Duration) string { return fmt.Sprintf("%.9fs", duration.Seconds()) }

// WithCallPolicy replaces the default deadline (DefaultDeadline) and retry policy
// (DefaultRetryPolicy) of a client's calls.
func WithCallPolicy(defaultDeadline time.Duration, retry RetryPolicy) grpc.DialOption {
	return grpc.WithDefaultServiceConfig(ServiceConfig(defaultDeadline, retry))
}

// WorkerTarget is one target for several decision addresses, e.g. the workers' own ports
// (`placecheck serve --worker-ports`): "ipv4:127.0.0.1:50061,127.0.0.1:50062" ("ipv6:" for
// [::1]:PORT), the form gRPC's C core and grpc-js read too. The clients connect to every address
// and round_robin spreads their calls.
func WorkerTarget(addresses ...string) string {
	family := "ipv4:"
	if len(addresses) > 0 && strings.HasPrefix(addresses[0], "[") {
		family = "ipv6:"
	}
	return family + strings.Join(addresses, ",")
}

// addressList turns an ipv4:/ipv6: list target, which grpc-go does not resolve itself, into a
// resolver of its own holding those addresses; any other target is left to grpc-go.
func addressList(target string) (string, []grpc.DialOption, error) {
	list, isList := strings.CutPrefix(target, "ipv4:")
	if !isList {
		list, isList = strings.CutPrefix(target, "ipv6:")
	}
	if !isList {
		return target, nil, nil
	}
	var addresses []resolver.Address
	for _, address := range strings.Split(list, ",") {
		if _, _, err := net.SplitHostPort(address); err != nil {
			return "", nil, fmt.Errorf("placecheck: %q in %s: %w", address, target, err)
		}
		addresses = append(addresses, resolver.Address{Addr: address})
	}
	workers := manual.NewBuilderWithScheme("placecheck-addresses")
	workers.InitialState(resolver.State{Addresses: addresses})
	return workers.Scheme() + ":///workers", []grpc.DialOption{grpc.WithResolvers(workers)}, nil
}

// newClient is grpc.NewClient with the client's defaults (plaintext, DefaultDeadline,
// DefaultRetryPolicy, round_robin) before the caller's options, and ipv4:/ipv6: address lists.
func newClient(target string, opts []grpc.DialOption) (*grpc.ClientConn, error) {
	target, listOptions, err := addressList(target)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(target, append(withDefaults(opts), listOptions...)...)
}

// DefaultStateTarget is where the sidecar serves FleetState by default:
// $XDG_RUNTIME_DIR/placecheck/state.sock, else placecheck/run/state.sock under $XDG_STATE_HOME
// (~/.local/state), as `placecheck serve` computes it.
var DefaultStateTarget = "unix:" + defaultStateSocket()

func defaultStateSocket() string {
	if runtime := os.Getenv("XDG_RUNTIME_DIR"); runtime != "" {
		return filepath.Join(runtime, "placecheck", "state.sock")
	}
	stateHome := os.Getenv("XDG_STATE_HOME")
	if stateHome == "" {
		home, _ := os.UserHomeDir()
		stateHome = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(stateHome, "placecheck", "run", "state.sock")
}

// WithTLS connects over TLS. caFile (PEM) verifies the sidecar's certificate (empty: the
// system's roots); certFile and keyFile (PEM, both or neither) present a client certificate,
// for a sidecar that requires mutual TLS (--tls-client-ca).
func WithTLS(caFile, certFile, keyFile string) (grpc.DialOption, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("placecheck: CA file: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("placecheck: CA file %s holds no PEM certificate", caFile)
		}
	}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("placecheck: client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}

// WithToken sends `authorization: Bearer <token>` with every call (--tokens-file).
func WithToken(token string) grpc.DialOption { return grpc.WithPerRPCCredentials(bearerToken(token)) }

type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: a token may also go to a loopback sidecar without TLS.
func (bearerToken) RequireTransportSecurity() bool { return false }

// PlacementClient calls PlacementCheck over several connections, round-robin.
//
// The sidecar's workers share one port with SO_REUSEPORT, which spreads connections, not calls:
// one connection would pin every call to one worker. Each grpc.ClientConn has its own
// connection, so the client opens one per channel and rotates calls over them. Given the
// workers' own addresses instead (WorkerTarget), each ClientConn connects to every worker and
// its round_robin spreads the calls, so one channel is enough. A call whose context has no
// deadline gets DefaultDeadline; UNAVAILABLE and RESOURCE_EXHAUSTED are retried as
// DefaultRetryPolicy says (WithCallPolicy changes both). It is safe for concurrent use.
type PlacementClient struct {
	Target string
	conns  []*grpc.ClientConn
	stubs  []pb.PlacementCheckClient
	calls  atomic.Uint64
}

// NewPlacementClient opens `channels` connections to target (runtime.NumCPU() when channels < 1;
// open at least as many as the sidecar has workers), or to each address of a WorkerTarget.
// Without dial options the connections are plaintext; WithTLS and WithToken give credentials,
// WithCallPolicy the default deadline and retry policy. Connections are made on first use.
func NewPlacementClient(target string, channels int, opts ...grpc.DialOption) (*PlacementClient, error) {
	if channels < 1 {
		channels = runtime.NumCPU()
	}
	client := &PlacementClient{Target: target}
	for index := 0; index < channels; index++ {
		conn, err := newClient(target, opts)
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("placecheck: channel %d to %s: %w", index, target, err)
		}
		client.conns = append(client.conns, conn)
		client.stubs = append(client.stubs, pb.NewPlacementCheckClient(conn))
	}
	return client, nil
}

func (c *PlacementClient) next() pb.PlacementCheckClient {
	return c.stubs[(c.calls.Add(1)-1)%uint64(len(c.stubs))]
}

// Connections is the number of connections the client rotates over.
func (c *PlacementClient) Connections() int { return len(c.conns) }

// CheckDestination gives one verdict per host, in order: allowed, or every rule that refuses it.
// minGeneration (0: any) makes the sidecar wait for that snapshot generation, up to ctx's deadline.
func (c *PlacementClient) CheckDestination(ctx context.Context, request *pb.PlacementRequest, hosts []string,
	minGeneration uint64, opts ...grpc.CallOption) (*pb.CheckDestinationResponse, error) {
	return c.next().CheckDestination(ctx, &pb.CheckDestinationRequest{
		Request: request, Hosts: hosts, MinGeneration: minGeneration,
	}, opts...)
}

// SelectDestinations ranks hosts with alternates; when too few fit, the summary says which rules
// eliminated them. Set MaxAlternates (proto.Int32), MinGeneration or DecisionId on the message.
func (c *PlacementClient) SelectDestinations(ctx context.Context, request *pb.SelectDestinationsRequest,
	opts ...grpc.CallOption) (*pb.SelectDestinationsResponse, error) {
	return c.next().SelectDestinations(ctx, request, opts...)
}

// Close closes every connection.
func (c *PlacementClient) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// StateClient feeds the fleet to the sidecar's state owner. Every mutator returns the snapshot
// generation it published, to pass on as minGeneration to read your own writes.
type StateClient struct {
	Target string
	conn   *grpc.ClientConn
	stub   pb.FleetStateClient
}

// NewStateClient connects to the FleetState address (a unix: target by default). Options as for
// NewPlacementClient.
func NewStateClient(target string, opts ...grpc.DialOption) (*StateClient, error) {
	conn, err := newClient(target, opts)
	if err != nil {
		return nil, fmt.Errorf("placecheck: %s: %w", target, err)
	}
	return &StateClient{Target: target, conn: conn, stub: pb.NewFleetStateClient(conn)}, nil
}

// ReplaceFleet replaces the whole fleet.
func (s *StateClient) ReplaceFleet(ctx context.Context, fleet *pb.Fleet) (uint64, error) {
	reply, err := s.stub.ReplaceFleet(ctx, &pb.ReplaceFleetRequest{Fleet: fleet})
	return reply.GetGeneration(), err
}

// UpsertHosts adds or replaces hosts by name.
func (s *StateClient) UpsertHosts(ctx context.Context, hosts []*pb.Host) (uint64, error) {
	reply, err := s.stub.UpsertHosts(ctx, &pb.UpsertHostsRequest{Hosts: hosts})
	return reply.GetGeneration(), err
}

// RemoveHosts removes hosts by name; an unknown name is NOT_FOUND.
func (s *StateClient) RemoveHosts(ctx context.Context, names []string) (uint64, error) {
	reply, err := s.stub.RemoveHosts(ctx, &pb.RemoveHostsRequest{Names: names})
	return reply.GetGeneration(), err
}

// UpsertAggregates adds or replaces aggregates by id.
func (s *StateClient) UpsertAggregates(ctx context.Context, aggregates []*pb.Aggregate) (uint64, error) {
	reply, err := s.stub.UpsertAggregates(ctx, &pb.UpsertAggregatesRequest{Aggregates: aggregates})
	return reply.GetGeneration(), err
}

// RemoveAggregates removes aggregates by id; an unknown id is NOT_FOUND.
func (s *StateClient) RemoveAggregates(ctx context.Context, ids []int64) (uint64, error) {
	reply, err := s.stub.RemoveAggregates(ctx, &pb.RemoveAggregatesRequest{Ids: ids})
	return reply.GetGeneration(), err
}

// UpdateUsage updates hosts' usage only: the cheap, frequent update.
func (s *StateClient) UpdateUsage(ctx context.Context, usages []*pb.HostUsage) (uint64, error) {
	reply, err := s.stub.UpdateUsage(ctx, &pb.UpdateUsageRequest{Usages: usages})
	return reply.GetGeneration(), err
}

// Status reports the snapshot's generation, host and aggregate counts, age and size.
func (s *StateClient) Status(ctx context.Context) (*pb.GetStatusResponse, error) {
	return s.stub.GetStatus(ctx, &pb.GetStatusRequest{})
}

// Close closes the connection.
func (s *StateClient) Close() error { return s.conn.Close() }

// FieldViolation is one entry of a google.rpc.BadRequest.
type FieldViolation struct {
	Field       string
	Description string
}

// BadRequestViolations gives the field violations of the google.rpc.BadRequest in an error's
// rich status (the grpc-status-details-bin trailer of an INVALID_ARGUMENT); nil when it has none.
func BadRequestViolations(err error) []FieldViolation {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return nil
	}
	var violations []FieldViolation
	for _, detail := range st.Details() {
		if badRequest, isBadRequest := detail.(*errdetails.BadRequest); isBadRequest {
			for _, violation := range badRequest.GetFieldViolations() {
				violations = append(violations, FieldViolation{violation.GetField(), violation.GetDescription()})
			}
		}
	}
	return violations
}

// WaitUntilServing blocks until grpc.health.v1 reports the server SERVING at target, or returns
// an error saying "not serving" (and what it saw last) when it does not within timeout. One
// Watch waits for the connection, then for the status to change (the sidecar reports
// NOT_SERVING until it has a fleet); it is closed once SERVING, since an open Watch holds a
// sidecar thread. opts as for NewPlacementClient (WithTLS for a TLS port); a WorkerTarget waits
// for every worker.
func WaitUntilServing(ctx context.Context, target string, timeout time.Duration, opts ...grpc.DialOption) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if list, isList := strings.CutPrefix(target, "ipv4:"); isList || strings.HasPrefix(target, "ipv6:") {
		if !isList {
			list = strings.TrimPrefix(target, "ipv6:")
		}
		for _, address := range strings.Split(list, ",") {
			if err := watchUntilServing(ctx, address, timeout, opts); err != nil {
				return err
			}
		}
		return nil
	}
	return watchUntilServing(ctx, target, timeout, opts)
}

func watchUntilServing(ctx context.Context, target string, timeout time.Duration, opts []grpc.DialOption) error {
	conn, err := newClient(target, opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	lastSeen := "no answer"
	for ctx.Err() == nil {
		lastSeen = watchOnce(ctx, health, lastSeen)
		if lastSeen == "" {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("placecheck: %s not serving within %s (%s)", target, timeout, lastSeen)
}

// watchOnce follows one Watch: "" once SERVING, else what it saw last.
func watchOnce(ctx context.Context, health healthpb.HealthClient, lastSeen string) string {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	for err == nil {
		var reply *healthpb.HealthCheckResponse
		if reply, err = watch.Recv(); err == nil {
			if reply.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				return ""
			}
			lastSeen = reply.GetStatus().String()
		}
	}
	switch code := status.Code(err); {
	case errors.Is(err, io.EOF):
		return "the Watch ended after " + lastSeen
	case code == codes.DeadlineExceeded && lastSeen != "no answer":
		return lastSeen // out of time: what the Watch said last says more than the deadline
	default:
		return code.String() + ": " + status.Convert(err).Message()
	}
}

func withDefaults(opts []grpc.DialOption) []grpc.DialOption {
	// The defaults first, so that a caller's own credentials or call policy, applied later, win.
	return append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		WithCallPolicy(DefaultDeadline, DefaultRetryPolicy)}, opts...)
}
