package dev.placecheck.example;

import dev.placecheck.client.ClientOptions;
import dev.placecheck.client.Generation;
import dev.placecheck.client.PlacementClient;
import dev.placecheck.client.Readiness;
import dev.placecheck.client.RichError;
import dev.placecheck.client.StateClient;
import dev.placecheck.v1.CheckDestinationResponse;
import dev.placecheck.v1.Host;
import dev.placecheck.v1.HostVerdict;
import dev.placecheck.v1.Inventory;
import dev.placecheck.v1.PlacementRequest;
import dev.placecheck.v1.Rejection;
import dev.placecheck.v1.SelectDestinationsRequest;
import dev.placecheck.v1.SelectDestinationsResponse;
import io.grpc.StatusRuntimeException;
import java.io.PrintStream;
import java.time.Duration;
import java.util.List;

/**
 * The README's example: adds two hosts of its own to a running sidecar's fleet, asks about them,
 * shows a refusal's reasons and an INVALID_ARGUMENT's field, and removes the hosts again (the
 * rest of the fleet is left as it was).
 *
 * <pre>mvn -q compile exec:java [-Dexec.args="DECISION_TARGET STATE_TARGET"]</pre>
 *
 * <p>Without arguments: PLACECHECK_DECISION_TARGET and PLACECHECK_STATE_TARGET, else the
 * sidecar's defaults ({@link PlacementClient#DEFAULT_TARGET}, {@link StateClient#DEFAULT_TARGET}).
 */
public final class Example {
  private static final List<String> HOSTS = List.of("java-example-roomy", "java-example-full");

  private Example() {}

  public static void main(String[] args) throws Exception {
    String decisionTarget = args.length > 0 ? args[0]
        : System.getenv().getOrDefault("PLACECHECK_DECISION_TARGET", PlacementClient.DEFAULT_TARGET);
    String stateTarget = args.length > 1 ? args[1]
        : System.getenv().getOrDefault("PLACECHECK_STATE_TARGET", StateClient.DEFAULT_TARGET);
    run(decisionTarget, stateTarget, System.out);
  }

  public static void run(String decisionTarget, String stateTarget, PrintStream out) throws Exception {
    Readiness.waitUntilServing(decisionTarget, Duration.ofSeconds(10));
    ClientOptions options = ClientOptions.builder().channels(4).defaultDeadline(Duration.ofSeconds(2)).build();
    try (StateClient state = new StateClient(stateTarget);
         PlacementClient client = new PlacementClient(decisionTarget, options)) {
      Generation written = state.upsertHosts(List.of(host(HOSTS.get(0), 0), host(HOSTS.get(1), 60_000)));
      try {
        PlacementRequest request = PlacementRequest.newBuilder()
            .putResources("VCPU", 2).putResources("MEMORY_MB", 8192).build();
        // minGeneration: decide on a snapshot that has the hosts just written (read your writes).
        CheckDestinationResponse answer = client.checkDestination(request, HOSTS, written);
        for (HostVerdict verdict : answer.getVerdictsList()) {
          out.println(verdict.getHost() + (verdict.getAllowed() ? ": allowed" : ": refused"));
          for (Rejection rejection : verdict.getRejectionsList()) {
            out.println("  " + rejection.getRule() + " [" + rejection.getReason() + "] " + rejection.getMessage());
          }
        }
        SelectDestinationsResponse selected = client.selectDestinations(SelectDestinationsRequest.newBuilder()
            .setRequest(request).setMaxAlternates(2)
            .setMinGeneration(written.number()).setExpectedEpoch(written.epoch()).build());
        out.println("select: " + selected.getSummary().getMessage() + "; first choice "
            + selected.getPlacements(0).getSelected().getHost());
        try {
          client.checkDestination(PlacementRequest.newBuilder().putResources("VCPU", -1).build(), HOSTS);
        } catch (StatusRuntimeException refused) {
          RichError error = RichError.of(refused);
          out.println(error.code() + " on " + error.fields() + ": " + error.fieldViolations().get(0).getDescription());
        }
      } finally {
        state.removeHosts(HOSTS);
      }
    }
  }

  private static Host host(String name, long memoryUsedMb) {
    return Host.newBuilder().setName(name)
        .putResources("VCPU", Inventory.newBuilder().setTotal(16).setAllocationRatio(4.0).build())
        .putResources("MEMORY_MB", Inventory.newBuilder().setTotal(65_536).setUsed(memoryUsedMb).build())
        .build();
  }
}
