package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.placecheck.example.Example;
import dev.placecheck.v1.CheckDestinationResponse;
import dev.placecheck.v1.FilterSummary;
import dev.placecheck.v1.GetStatusResponse;
import dev.placecheck.v1.Host;
import dev.placecheck.v1.HostVerdict;
import dev.placecheck.v1.InstancePlacement;
import dev.placecheck.v1.Inventory;
import dev.placecheck.v1.PlacementRequest;
import dev.placecheck.v1.Rejection;
import dev.placecheck.v1.RuleElimination;
import dev.placecheck.v1.SelectDestinationsRequest;
import dev.placecheck.v1.SelectDestinationsResponse;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The client against a real sidecar with a demo fleet, plus hosts of this class's own. */
class PlacementClientTest {
  private static final String TRAIT = "CUSTOM_JAVA_CLIENT_TEST";  // only this class's hosts have it
  private static final List<String> OURS = List.of("java-client-ok-1", "java-client-ok-2", "java-client-ok-3");
  private static final String FULL = "java-client-full";
  private static final int CHANNELS = 4;

  private static Sidecar sidecar;
  private static AttemptRecorder recorder;
  private static PlacementClient client;
  private static StateClient state;
  private static Generation written;

  @BeforeAll
  static void start() throws Exception {
    sidecar = Sidecar.withDemoFleet(200);
    recorder = new AttemptRecorder();
    client = new PlacementClient(sidecar.decisionTarget,
        ClientOptions.builder().channels(CHANNELS).intercept(recorder).build());
    state = new StateClient(sidecar.stateTarget);
    written = state.upsertHosts(List.of(
        host(OURS.get(0), 0, true), host(OURS.get(1), 0, true), host(OURS.get(2), 0, true), host(FULL, 30000, false)));
  }

  @AfterAll
  static void stop() {
    if (client != null) {
      client.close();
    }
    if (state != null) {
      state.close();
    }
    if (sidecar != null) {
      sidecar.close();
    }
  }

  static Host host(String name, long memoryUsed, boolean enabled) {
    return Host.newBuilder().setName(name).setEnabled(enabled).addTraits(TRAIT)
        .putResources("VCPU", Inventory.newBuilder().setTotal(16).setAllocationRatio(4.0).build())
        .putResources("MEMORY_MB", Inventory.newBuilder().setTotal(32768).setUsed(memoryUsed).build())
        .putResources("DISK_GB", Inventory.newBuilder().setTotal(500).build())
        .build();
  }

  static PlacementRequest workload(long memoryMb) {
    return PlacementRequest.newBuilder()
        .putResources("VCPU", 2).putResources("MEMORY_MB", memoryMb).putResources("DISK_GB", 20)
        .addRequiredTraits(TRAIT)
        .build();
  }

  @Test
  void statusCountsTheWrittenHosts() {
    GetStatusResponse status = state.status();
    assertTrue(status.getGeneration() >= written.number(), status.toString());
    assertEquals(written.epoch(), status.getEpoch());
    assertEquals(204, status.getHostCount(), status.toString());
  }

  @Test
  void allowedHostReadsItsOwnWrite() {
    CheckDestinationResponse answer = client.checkDestination(workload(4096), List.of(OURS.get(0)), written);
    assertTrue(answer.getGeneration() >= written.number());
    assertEquals(written.epoch(), answer.getEpoch());
    assertFalse(answer.getDecisionId().isEmpty());
    HostVerdict verdict = answer.getVerdicts(0);
    assertEquals(OURS.get(0), verdict.getHost());
    assertTrue(verdict.getAllowed(), verdict.toString());
    assertEquals(0, verdict.getRejectionsCount());
    assertTrue(verdict.getRulesEvaluatedList().contains("resource:MEMORY_MB"), verdict.toString());
  }

  @Test
  void refusalNamesEveryRuleWithReasonsAndNumbers() {
    CheckDestinationResponse answer = client.checkDestination(workload(4096), List.of(OURS.get(0), FULL), written);
    assertEquals(2, answer.getVerdictsCount());
    assertTrue(answer.getVerdicts(0).getAllowed());
    HostVerdict refused = answer.getVerdicts(1);
    assertFalse(refused.getAllowed());
    assertEquals(List.of("resource:MEMORY_MB INSUFFICIENT_CAPACITY", "ComputeFilter SERVICE_DISABLED"),
        refused.getRejectionsList().stream().map(r -> r.getRule() + " " + r.getReason()).toList());
    Rejection memory = refused.getRejections(0);
    assertTrue(memory.getMessage().contains("requested 4096, free 2768 of capacity 32768"), memory.getMessage());
    assertEquals(4096, memory.getNumbers().getRequested());
    assertEquals(2768, memory.getNumbers().getFree());
    assertEquals(30000, memory.getNumbers().getUsed());
    assertFalse(memory.getNumbers().hasActual());
  }

  @Test
  void selectRanksOurHostsWithAlternates() {
    PlacementRequest request = workload(4096).toBuilder().setNumInstances(2).build();
    SelectDestinationsResponse answer = client.selectDestinations(SelectDestinationsRequest.newBuilder()
        .setRequest(request).setMaxAlternates(1)
        .setMinGeneration(written.number()).setExpectedEpoch(written.epoch()).build());
    FilterSummary summary = answer.getSummary();
    assertEquals(2, summary.getInstancesRequested());
    assertEquals(2, summary.getInstancesPlaced());
    assertEquals(3, summary.getHostsPassed(), summary.toString());
    assertEquals(2, answer.getPlacementsCount());
    for (InstancePlacement placement : answer.getPlacementsList()) {
      String selected = placement.getSelected().getHost();
      assertTrue(OURS.contains(selected), selected);
      assertTrue(placement.getSelected().getWeighersCount() > 0);
      assertEquals(1, placement.getAlternatesCount());
      assertTrue(OURS.contains(placement.getAlternates(0).getHost()));
      assertNotEquals(selected, placement.getAlternates(0).getHost());
    }
    RuleElimination traits = summary.getEliminationsList().stream()
        .filter(elimination -> elimination.getRule().equals("RequiredTraits")).findFirst().orElseThrow();
    assertEquals(summary.getHostsEvaluated() - 4, traits.getHosts());
  }

  @Test
  void selectThatNothingFitsSaysWhichRulesEliminated() {
    SelectDestinationsResponse answer = client.selectDestinations(workload(1_000_000), written);
    assertEquals(0, answer.getPlacementsCount());
    assertEquals(0, answer.getSummary().getHostsPassed());
    assertTrue(answer.getSummary().getMessage().matches("^0/\\d+ hosts fit: .*resource:MEMORY_MB.*"),
        answer.getSummary().getMessage());
  }

  @Test
  void invalidArgumentIsDecodedToItsField() {
    PlacementRequest negative = PlacementRequest.newBuilder().putResources("VCPU", -1).build();
    StatusRuntimeException error = assertThrows(StatusRuntimeException.class,
        () -> client.checkDestination(negative, List.of(OURS.get(0))));
    RichError rich = RichError.of(error);
    assertEquals(Status.Code.INVALID_ARGUMENT, rich.code());
    assertEquals(List.of("request.resources[VCPU]"), rich.fields());
    assertFalse(rich.fieldViolations().get(0).getDescription().isEmpty());
  }

  @Test
  void unknownHostIsNotFoundWithItsResourceInfo() {
    StatusRuntimeException error = assertThrows(StatusRuntimeException.class,
        () -> client.checkDestination(workload(1024), List.of("java-client-no-such-host")));
    RichError rich = RichError.of(error);
    assertEquals(Status.Code.NOT_FOUND, rich.code());
    assertEquals("java-client-no-such-host", rich.resourceInfo().orElseThrow().getResourceName());
    assertEquals("host", rich.resourceInfo().orElseThrow().getResourceType());
    assertEquals("HOST_NOT_FOUND", rich.reason());
  }

  @Test
  void unreachableMinGenerationIsFailedPrecondition() {
    Generation future = new Generation(written.number() + 1_000, written.epoch());
    StatusRuntimeException error = assertThrows(StatusRuntimeException.class,
        () -> client.checkDestination(workload(1024).toBuilder().build(), List.of(OURS.get(0)), future));
    RichError rich = RichError.of(error);
    assertEquals(Status.Code.FAILED_PRECONDITION, rich.code(), rich.toString());
    assertEquals("SNAPSHOT_STALE", rich.preconditionViolations().get(0).getType());
    assertEquals("min_generation", rich.preconditionViolations().get(0).getSubject());
    assertEquals(Long.toString(future.number()), rich.errorInfo().orElseThrow().getMetadataOrThrow("minGeneration"));
  }

  @Test
  void anotherHistorysGenerationIsRefused() {
    Generation elsewhere = new Generation(written.number(), "another-fleet-history");
    StatusRuntimeException error = assertThrows(StatusRuntimeException.class,
        () -> client.selectDestinations(workload(1024), elsewhere));
    RichError rich = RichError.of(error);
    assertEquals(Status.Code.FAILED_PRECONDITION, rich.code());
    assertEquals("EPOCH_MISMATCH", rich.reason());
    assertEquals("expected_epoch", rich.preconditionViolations().get(0).getSubject());
  }

  @Test
  void callsRotateOverOneConnectionPerChannel() {
    recorder.clear();
    for (int call = 0; call < 3 * CHANNELS; call++) {
      client.checkDestination(workload(1024), List.of(OURS.get(1)));
    }
    assertEquals(CHANNELS, client.connections());
    assertEquals(3 * CHANNELS, recorder.localAddresses.size());
    assertEquals(CHANNELS, new HashSet<>(recorder.localAddresses).size(), recorder.localAddresses.toString());
  }

  @Test
  void healthWatchReportsServing() throws TimeoutException {
    Readiness.waitUntilServing(sidecar.decisionTarget, Duration.ofSeconds(5));
    Readiness.waitUntilServing(sidecar.decisionTarget, "placecheck.v1.PlacementCheck", Duration.ofSeconds(5),
        ClientOptions.defaults());
  }

  @Test
  void nothingListeningIsNotServingInTime() throws Exception {
    String nowhere = "127.0.0.1:" + Sidecar.freePort();
    TimeoutException timeout = assertThrows(TimeoutException.class,
        () -> Readiness.waitUntilServing(nowhere, Duration.ofMillis(300)));
    assertTrue(timeout.getMessage().contains("not serving"), timeout.getMessage());
  }

  @Test
  void theReadmesExampleRunsAndLeavesTheFleetAsItWas() throws Exception {
    long hostsBefore = state.status().getHostCount();
    ByteArrayOutputStream printed = new ByteArrayOutputStream();
    Example.run(sidecar.decisionTarget, sidecar.stateTarget, new PrintStream(printed, true, StandardCharsets.UTF_8));
    String output = printed.toString(StandardCharsets.UTF_8);
    assertTrue(output.contains("java-example-roomy: allowed"), output);
    assertTrue(output.contains("java-example-full: refused\n  resource:MEMORY_MB [INSUFFICIENT_CAPACITY]"), output);
    assertTrue(output.contains("INVALID_ARGUMENT on [request.resources[VCPU]]"), output);
    assertEquals(hostsBefore, state.status().getHostCount());
  }
}
