package dev.placecheck.client;

import dev.placecheck.v1.CheckDestinationRequest;
import dev.placecheck.v1.CheckDestinationResponse;
import dev.placecheck.v1.PlacementCheckGrpc;
import dev.placecheck.v1.PlacementRequest;
import dev.placecheck.v1.SelectDestinationsRequest;
import dev.placecheck.v1.SelectDestinationsResponse;
import io.grpc.ManagedChannel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Calls PlacementCheck over several channels, round-robin. Thread-safe.
 *
 * <p>The sidecar's workers share one port with SO_REUSEPORT, which spreads connections, not
 * calls: one channel would pin every call to one worker. Each ManagedChannel has its own
 * connection, so the client opens {@link ClientOptions.Builder#channels} of them and rotates
 * calls over them. A call without its own deadline gets the options' default deadline; calls
 * refused UNAVAILABLE or RESOURCE_EXHAUSTED are retried by gRPC's retry policy, after the
 * RetryInfo delay when the sidecar gives one. A failed call throws StatusRuntimeException:
 * {@link RichError#of} decodes its details.
 */
public final class PlacementClient implements AutoCloseable {
  /** Where the sidecar serves PlacementCheck by default. */
  public static final String DEFAULT_TARGET = "127.0.0.1:50051";

  private final String target;
  private final List<ManagedChannel> channels = new ArrayList<>();
  private final List<PlacementCheckGrpc.PlacementCheckBlockingStub> stubs = new ArrayList<>();
  private final AtomicLong calls = new AtomicLong();

  public PlacementClient(String target) {
    this(target, ClientOptions.defaults());
  }

  public PlacementClient(String target, ClientOptions options) {
    this.target = target;
    for (int index = 0; index < options.channels; index++) {
      ManagedChannel channel = Channels.open(target, options);
      channels.add(channel);
      stubs.add(PlacementCheckGrpc.newBlockingStub(channel));
    }
  }

  public String target() {
    return target;
  }

  /** How many channels (connections) calls rotate over. */
  public int connections() {
    return channels.size();
  }

  /** The next channel's stub, for calls this class has no method for (async, per-call options). */
  public PlacementCheckGrpc.PlacementCheckBlockingStub stub() {
    return stubs.get((int) Math.floorMod(calls.getAndIncrement(), (long) stubs.size()));
  }

  /** One verdict per host, in order: allowed, or every rule that refuses it. */
  public CheckDestinationResponse checkDestination(PlacementRequest request, List<String> hosts) {
    return checkDestination(request, hosts, Generation.ANY);
  }

  /**
   * As {@link #checkDestination(PlacementRequest, List)}, on a snapshot at least as new as
   * {@code minGeneration} and of its epoch: read your own writes. The sidecar waits for that
   * generation (within the deadline) and otherwise answers FAILED_PRECONDITION.
   */
  public CheckDestinationResponse checkDestination(PlacementRequest request, List<String> hosts,
                                                   Generation minGeneration) {
    return checkDestination(CheckDestinationRequest.newBuilder()
        .setRequest(request)
        .addAllHosts(hosts)
        .setMinGeneration(minGeneration.number())
        .setExpectedEpoch(minGeneration.epoch())
        .build());
  }

  public CheckDestinationResponse checkDestination(CheckDestinationRequest message) {
    return stub().checkDestination(message);
  }

  public CheckDestinationResponse checkDestination(CheckDestinationRequest message, Duration deadline) {
    return stub().withDeadlineAfter(deadline.toNanos(), TimeUnit.NANOSECONDS).checkDestination(message);
  }

  /** Ranked hosts with alternates; when too few fit, the summary says which rules eliminated them. */
  public SelectDestinationsResponse selectDestinations(PlacementRequest request) {
    return selectDestinations(request, Generation.ANY);
  }

  /** As {@link #selectDestinations(PlacementRequest)}, reading your own writes (see checkDestination). */
  public SelectDestinationsResponse selectDestinations(PlacementRequest request, Generation minGeneration) {
    return selectDestinations(SelectDestinationsRequest.newBuilder()
        .setRequest(request)
        .setMinGeneration(minGeneration.number())
        .setExpectedEpoch(minGeneration.epoch())
        .build());
  }

  /** The whole message: max_alternates, decision_id and min_generation as set on it. */
  public SelectDestinationsResponse selectDestinations(SelectDestinationsRequest message) {
    return stub().selectDestinations(message);
  }

  public SelectDestinationsResponse selectDestinations(SelectDestinationsRequest message, Duration deadline) {
    return stub().withDeadlineAfter(deadline.toNanos(), TimeUnit.NANOSECONDS).selectDestinations(message);
  }

  /** Closes every channel, waiting briefly for calls in flight. */
  @Override
  public void close() {
    Channels.close(channels);
  }
}
