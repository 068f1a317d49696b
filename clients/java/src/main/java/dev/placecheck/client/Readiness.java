package dev.placecheck.client;

import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import java.time.Duration;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** Waits for the sidecar to be ready, through grpc.health.v1's Watch. */
public final class Readiness {
  private static final long RETRY_PAUSE_MS = 50;

  private Readiness() {}

  /** As {@link #waitUntilServing(String, String, Duration, ClientOptions)}, for the whole server. */
  public static void waitUntilServing(String target, Duration timeout) throws TimeoutException {
    waitUntilServing(target, "", timeout, ClientOptions.defaults());
  }

  /**
   * Blocks until grpc.health.v1 reports {@code service} ("" for the whole server) SERVING at
   * {@code target}. One Watch stream waits for the connection and then for the status to
   * change (the sidecar reports NOT_SERVING until it has a fleet); it is closed once SERVING, as
   * an open Watch holds one of the sidecar's threads.
   *
   * @throws TimeoutException when not SERVING within {@code timeout}, saying what was last seen
   */
  public static void waitUntilServing(String target, String service, Duration timeout, ClientOptions options)
      throws TimeoutException {
    ManagedChannel channel = Channels.open(target, options);
    try {
      long deadline = System.nanoTime() + timeout.toNanos();
      HealthCheckRequest request = HealthCheckRequest.newBuilder().setService(service).build();
      String lastSeen = "no answer";
      for (long remaining = timeout.toNanos(); remaining > 0; remaining = deadline - System.nanoTime()) {
        Context.CancellableContext watch = Context.current().withCancellation();
        Context previous = watch.attach();
        try {
          Iterator<HealthCheckResponse> statuses = HealthGrpc.newBlockingStub(channel)
              .withWaitForReady()
              .withDeadlineAfter(remaining, TimeUnit.NANOSECONDS)
              .watch(request);
          while (statuses.hasNext()) {
            HealthCheckResponse.ServingStatus status = statuses.next().getStatus();
            if (status == HealthCheckResponse.ServingStatus.SERVING) {
              return;
            }
            lastSeen = status.name();
          }
          lastSeen = "the Watch ended after " + lastSeen;
        } catch (StatusRuntimeException error) {
          Status status = error.getStatus();
          if (status.getCode() == Status.Code.DEADLINE_EXCEEDED && !lastSeen.equals("no answer")) {
            break;  // out of time: what the Watch said last says more than the deadline
          }
          lastSeen = status.getCode() + ": " + status.getDescription();
          if (status.getCode() == Status.Code.UNIMPLEMENTED) {
            break;
          }
        } finally {
          watch.detach(previous);
          watch.cancel(null);
        }
        pause(Math.min(RETRY_PAUSE_MS, TimeUnit.NANOSECONDS.toMillis(Math.max(0, deadline - System.nanoTime()))));
      }
      throw new TimeoutException(target + " not serving " + (service.isEmpty() ? "the server" : service)
          + " within " + timeout + " (" + lastSeen + ")");
    } finally {
      Channels.close(List.of(channel));
    }
  }

  private static void pause(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException interrupted) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted waiting for the sidecar", interrupted);
    }
  }
}
