package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.placecheck.v1.CheckDestinationRequest;
import dev.placecheck.v1.CheckDestinationResponse;
import dev.placecheck.v1.Fleet;
import dev.placecheck.v1.PlacementCheckGrpc;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * gRPC's retry policy against a real sidecar that cannot answer yet: one without a fleet
 * (UNAVAILABLE with a RetryInfo of 100 ms) and then one shedding load (RESOURCE_EXHAUSTED).
 * In order: the fleet arrives in the middle.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class RetryPolicyTest {
  private static final String HOST = "java-retry-1";
  private static final Duration NO_SNAPSHOT_RETRY_DELAY = Duration.ofMillis(100);  // server/errors.py
  private static final int CALLS_ADMITTED_PER_THREAD = 128;  // server/worker.py MAX_CALLS_PER_THREAD

  private static Sidecar sidecar;

  @BeforeAll
  static void start() throws Exception {
    sidecar = Sidecar.withoutFleetOnOneThread();
  }

  @AfterAll
  static void stop() {
    if (sidecar != null) {
      sidecar.close();
    }
  }

  private static PlacementClient client(ClientOptions.RetryPolicy policy, AttemptRecorder recorder) {
    return new PlacementClient(sidecar.decisionTarget, ClientOptions.builder()
        .channels(1).retryPolicy(policy).defaultDeadline(Duration.ofSeconds(10)).intercept(recorder).build());
  }

  private static CheckDestinationResponse checkOurHost(PlacementClient client) {
    return client.checkDestination(PlacementClientTest.workload(1024), List.of(HOST));
  }

  @Test
  @Order(1)
  void healthWatchSaysNotServingWithoutAFleet() {
    TimeoutException notServing = assertThrows(TimeoutException.class,
        () -> Readiness.waitUntilServing(sidecar.decisionTarget, Duration.ofMillis(500)));
    assertTrue(notServing.getMessage().contains("NOT_SERVING"), notServing.getMessage());
  }

  @Test
  @Order(2)
  void retryInfoPacesGrpcsOwnRetries() {
    AttemptRecorder recorder = new AttemptRecorder();
    // Its own backoff would wait at most 10 ms, then 20 ms: the sidecar's RetryInfo asks for 100 ms.
    var policy = new ClientOptions.RetryPolicy(3, Duration.ofMillis(10), Duration.ofMillis(20), 2.0);
    try (PlacementClient client = client(policy, recorder)) {
      RichError error = RichError.of(assertThrows(StatusRuntimeException.class, () -> checkOurHost(client)));
      assertEquals(Status.Code.UNAVAILABLE, error.code());
      assertEquals("NO_SNAPSHOT", error.reason());
      assertEquals(NO_SNAPSHOT_RETRY_DELAY, error.retryDelay().orElseThrow());
    }
    assertEquals(3, recorder.attempts());
    for (int attempt = 1; attempt < 3; attempt++) {
      long gap = recorder.attemptNanos.get(attempt) - recorder.attemptNanos.get(attempt - 1);
      assertTrue(gap >= NO_SNAPSHOT_RETRY_DELAY.toNanos() * 9 / 10, "attempt " + attempt + " after " + gap + " ns");
    }
  }

  @Test
  @Order(3)
  void withoutARetryPolicyOneAttemptFails() {
    AttemptRecorder recorder = new AttemptRecorder();
    try (PlacementClient client = client(ClientOptions.RetryPolicy.NONE, recorder)) {
      StatusRuntimeException error = assertThrows(StatusRuntimeException.class, () -> checkOurHost(client));
      assertEquals(Status.Code.UNAVAILABLE, error.getStatus().getCode());
    }
    assertEquals(1, recorder.attempts());
  }

  @Test
  @Order(4)
  void unavailableIsRetriedUntilTheFleetArrives() throws Exception {
    AttemptRecorder recorder = new AttemptRecorder();
    var policy = new ClientOptions.RetryPolicy(50, Duration.ofMillis(50), Duration.ofMillis(200), 2.0);
    CompletableFuture<Generation> published = CompletableFuture.supplyAsync(() -> {
      Sidecar.sleep(500);
      try (StateClient state = new StateClient(sidecar.stateTarget)) {
        return state.replaceFleet(Fleet.newBuilder().addHosts(PlacementClientTest.host(HOST, 0, true)).build(), false);
      }
    });
    try (PlacementClient client = client(policy, recorder)) {
      CheckDestinationResponse answer = checkOurHost(client);
      assertTrue(answer.getVerdicts(0).getAllowed(), answer.toString());
      assertEquals(published.get(10, TimeUnit.SECONDS).epoch(), answer.getEpoch());
    }
    assertTrue(recorder.attempts() >= 3, recorder.attempts() + " attempts");
  }

  @Test
  @Order(5)
  void healthWatchSaysServingOnceTheFleetIsThere() throws TimeoutException {
    Readiness.waitUntilServing(sidecar.decisionTarget, Duration.ofSeconds(10));
  }

  @Test
  @Order(6)
  void resourceExhaustedIsRetriedUntilTheLoadIsShed() throws Exception {
    ManagedChannel flood = Grpc.newChannelBuilder(sidecar.decisionTarget, InsecureChannelCredentials.create()).build();
    try {
      // A call waiting for a generation that never comes holds the one thread until shortly
      // before its 1.5 s deadline; the calls queued behind it fill the admission limit, and
      // the sidecar sheds the rest.
      int calls = CALLS_ADMITTED_PER_THREAD + 32;
      CountDownLatch done = new CountDownLatch(calls);
      CountDownLatch shed = new CountDownLatch(1);  // the admission limit is full
      CheckDestinationRequest unreachable = CheckDestinationRequest.newBuilder()
          .setRequest(PlacementClientTest.workload(1024)).addHosts(HOST).setMinGeneration(1_000_000).build();
      for (int call = 0; call < calls; call++) {
        PlacementCheckGrpc.newStub(flood).withDeadlineAfter(1500, TimeUnit.MILLISECONDS)
            .checkDestination(unreachable, countDown(done, shed));
      }
      assertTrue(shed.await(5, TimeUnit.SECONDS), "the sidecar shed none of " + calls + " calls");
      AttemptRecorder once = new AttemptRecorder();
      try (PlacementClient client = client(ClientOptions.RetryPolicy.NONE, once)) {
        StatusRuntimeException refused = assertThrows(StatusRuntimeException.class, () -> checkOurHost(client));
        assertEquals(Status.Code.RESOURCE_EXHAUSTED, refused.getStatus().getCode(), refused.toString());
      }
      AttemptRecorder recorder = new AttemptRecorder();
      var policy = new ClientOptions.RetryPolicy(20, Duration.ofMillis(200), Duration.ofSeconds(1), 2.0);
      try (PlacementClient client = client(policy, recorder)) {
        assertTrue(checkOurHost(client).getVerdicts(0).getAllowed());
      }
      assertTrue(recorder.attempts() >= 2, recorder.attempts() + " attempts");
      assertTrue(done.await(10, TimeUnit.SECONDS), "the flood's calls did not end");
    } finally {
      flood.shutdownNow();
    }
  }

  private static <T> StreamObserver<T> countDown(CountDownLatch done, CountDownLatch shed) {
    return new StreamObserver<>() {
      @Override
      public void onNext(T value) {}

      @Override
      public void onError(Throwable error) {
        if (Status.fromThrowable(error).getCode() == Status.Code.RESOURCE_EXHAUSTED) {
          shed.countDown();
        }
        done.countDown();
      }

      @Override
      public void onCompleted() {
        done.countDown();
      }
    };
  }
}
