package dev.placecheck.client;

import dev.placecheck.v1.Aggregate;
import dev.placecheck.v1.Fleet;
import dev.placecheck.v1.FleetStateGrpc;
import dev.placecheck.v1.GetStatusRequest;
import dev.placecheck.v1.GetStatusResponse;
import dev.placecheck.v1.Host;
import dev.placecheck.v1.HostUsage;
import dev.placecheck.v1.RemoveAggregatesRequest;
import dev.placecheck.v1.RemoveHostsRequest;
import dev.placecheck.v1.ReplaceFleetRequest;
import dev.placecheck.v1.UpdateUsageRequest;
import dev.placecheck.v1.UpsertAggregatesRequest;
import dev.placecheck.v1.UpsertHostsRequest;
import io.grpc.ManagedChannel;
import java.nio.file.Path;
import java.util.List;

/**
 * Feeds the fleet to the sidecar's state owner. Every write returns the {@link Generation} it
 * durably published: pass it as a decision's {@code minGeneration} to read your own writes.
 */
public final class StateClient implements AutoCloseable {
  /**
   * Where the sidecar serves FleetState by default: {@code $XDG_RUNTIME_DIR/placecheck/state.sock},
   * else {@code run/state.sock} in {@code $XDG_STATE_HOME/placecheck} (default
   * {@code ~/.local/state/placecheck}): a directory of the user's own, never a shared one.
   */
  public static final String DEFAULT_TARGET = "unix:" + defaultSocket();

  private final ManagedChannel channel;
  private final FleetStateGrpc.FleetStateBlockingStub stub;

  public StateClient(String target) {
    this(target, ClientOptions.defaults());
  }

  public StateClient(String target, ClientOptions options) {
    channel = Channels.open(target, options);
    stub = FleetStateGrpc.newBlockingStub(channel);
  }

  /** The stub, for calls this class has no method for (ReplaceFleetStream, per-call options). */
  public FleetStateGrpc.FleetStateBlockingStub stub() {
    return stub;
  }

  /** Replaces the whole fleet; one without hosts only with {@code allowEmpty}. */
  public Generation replaceFleet(Fleet fleet, boolean allowEmpty) {
    var reply = stub.replaceFleet(ReplaceFleetRequest.newBuilder().setFleet(fleet).setAllowEmpty(allowEmpty).build());
    return new Generation(reply.getGeneration(), reply.getEpoch());
  }

  /** Adds or replaces hosts by name. */
  public Generation upsertHosts(List<Host> hosts) {
    var reply = stub.upsertHosts(UpsertHostsRequest.newBuilder().addAllHosts(hosts).build());
    return new Generation(reply.getGeneration(), reply.getEpoch());
  }

  /** Removes hosts by name; an unknown name is NOT_FOUND. */
  public Generation removeHosts(List<String> names) {
    var reply = stub.removeHosts(RemoveHostsRequest.newBuilder().addAllNames(names).build());
    return new Generation(reply.getGeneration(), reply.getEpoch());
  }

  /** Adds or replaces aggregates by id. */
  public Generation upsertAggregates(List<Aggregate> aggregates) {
    var reply = stub.upsertAggregates(UpsertAggregatesRequest.newBuilder().addAllAggregates(aggregates).build());
    return new Generation(reply.getGeneration(), reply.getEpoch());
  }

  /** Removes aggregates by id; an unknown id is NOT_FOUND. */
  public Generation removeAggregates(List<Long> ids) {
    var reply = stub.removeAggregates(RemoveAggregatesRequest.newBuilder().addAllIds(ids).build());
    return new Generation(reply.getGeneration(), reply.getEpoch());
  }

  /** Updates hosts' usage only: the cheap, frequent write. */
  public Generation updateUsage(List<HostUsage> usages) {
    var reply = stub.updateUsage(UpdateUsageRequest.newBuilder().addAllUsages(usages).build());
    return new Generation(reply.getGeneration(), reply.getEpoch());
  }

  /** The snapshot's generation, epoch, host and aggregate counts, age and size. */
  public GetStatusResponse status() {
    return stub.getStatus(GetStatusRequest.getDefaultInstance());
  }

  @Override
  public void close() {
    Channels.close(List.of(channel));
  }

  private static Path defaultSocket() {
    String runtime = System.getenv("XDG_RUNTIME_DIR");
    if (runtime != null && !runtime.isEmpty()) {
      return Path.of(runtime, "placecheck", "state.sock");
    }
    String stateHome = System.getenv("XDG_STATE_HOME");
    Path base = stateHome != null && !stateHome.isEmpty()
        ? Path.of(stateHome) : Path.of(System.getProperty("user.home"), ".local", "state");
    return base.resolve(Path.of("placecheck", "run", "state.sock"));
  }
}
