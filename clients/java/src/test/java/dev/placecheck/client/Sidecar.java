package dev.placecheck.client;

import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.stream.Stream;

/**
 * The real sidecar ({@code python -m placecheck_server.cli serve}) for the tests, started from the
 * repository root with its venv on a free loopback port and a Unix socket in a temp directory
 * of its own (also its state directory), and stopped with SIGTERM.
 */
final class Sidecar implements AutoCloseable {
  static final Duration STARTUP_TIMEOUT = Duration.ofSeconds(60);
  private static final Duration STOP_TIMEOUT = Duration.ofSeconds(30);

  final String decisionTarget;
  final String stateTarget;
  private final Process process;
  private final Path directory;
  private final Path log;

  private Sidecar(Process process, Path directory, String decisionTarget, String stateTarget) {
    this.process = process;
    this.directory = directory;
    this.log = directory.resolve("sidecar.log");
    this.decisionTarget = decisionTarget;
    this.stateTarget = stateTarget;
  }

  /** A sidecar of 2 workers with a demo fleet of {@code demoHosts} hosts, once health reports SERVING. */
  static Sidecar withDemoFleet(int demoHosts) throws IOException, TimeoutException {
    return withDemoFleet(demoHosts, List.of(), ClientOptions.defaults());
  }

  /** As {@link #withDemoFleet(int)}, with more arguments, asking for health with {@code options}. */
  static Sidecar withDemoFleet(int demoHosts, List<String> arguments, ClientOptions options)
      throws IOException, TimeoutException {
    List<String> all = new ArrayList<>(List.of("--workers", "2", "--demo", "--demo-hosts", Integer.toString(demoHosts)));
    all.addAll(arguments);
    Sidecar sidecar = start(all);
    try {
      Readiness.waitUntilServing(sidecar.decisionTarget, "", STARTUP_TIMEOUT, options);
    } catch (TimeoutException notServing) {
      String log = sidecar.log();
      sidecar.close();
      throw new TimeoutException(notServing.getMessage() + "\n" + log);
    }
    return sidecar;
  }

  /**
   * A sidecar of one worker deciding one call at a time, with no fleet yet: its state service
   * answers, its decisions are UNAVAILABLE, and 128 calls in flight make it shed load.
   */
  static Sidecar withoutFleetOnOneThread() throws IOException {
    return start(List.of("--workers", "1", "--threads-per-worker", "1"));
  }

  private static Sidecar start(List<String> arguments) throws IOException {
    Path repo = Paths.get(System.getProperty("placecheck.repo", "../..")).toAbsolutePath().normalize();
    Path python = repo.resolve(".venv/bin/python");
    if (!Files.isExecutable(python)) {
      throw new IllegalStateException(python + " is missing: run `make build` in " + repo);
    }
    Path directory = Files.createTempDirectory("placecheck-java-test-");
    String decisionTarget = "127.0.0.1:" + freePort();
    String stateTarget = "unix:" + directory.resolve("state.sock");
    List<String> command = new ArrayList<>(List.of(python.toString(), "-m", "placecheck_server.cli", "serve",
        "--listen", decisionTarget, "--state-listen", stateTarget, "--metrics-port", "0",
        "--state-dir", directory.resolve("state").toString()));
    command.addAll(arguments);
    ProcessBuilder builder = new ProcessBuilder(command).directory(repo.toFile()).redirectErrorStream(true)
        .redirectOutput(directory.resolve("sidecar.log").toFile());
    builder.environment().put("TMPDIR", directory.toString());
    builder.environment().remove("PROMETHEUS_MULTIPROC_DIR");
    Sidecar sidecar = new Sidecar(builder.start(), directory, decisionTarget, stateTarget);
    try {
      sidecar.waitForStateService();
    } catch (RuntimeException | IOException notStarted) {
      String log = sidecar.log();
      sidecar.close();
      throw new IllegalStateException("the sidecar did not start:\n" + log, notStarted);
    }
    return sidecar;
  }

  private void waitForStateService() throws IOException {
    long deadline = System.nanoTime() + STARTUP_TIMEOUT.toNanos();
    ClientOptions once = ClientOptions.builder().retryPolicy(ClientOptions.RetryPolicy.NONE)
        .defaultDeadline(Duration.ofSeconds(1)).build();
    try (StateClient state = new StateClient(stateTarget, once)) {
      while (true) {
        if (!process.isAlive()) {
          throw new IOException("the sidecar exited with " + process.exitValue());
        }
        try {
          state.status();
          return;
        } catch (StatusRuntimeException notYet) {
          if (System.nanoTime() > deadline) {
            throw notYet;
          }
          sleep(50);
        }
      }
    }
  }

  String log() {
    try {
      return Files.exists(log) ? Files.readString(log) : "(no log)";
    } catch (IOException error) {
      return "(log unreadable: " + error + ")";
    }
  }

  /** SIGTERM, wait, and fail when the sidecar does not exit cleanly; the temp directory goes. */
  @Override
  public void close() {
    try {
      process.destroy();
      if (!process.waitFor(STOP_TIMEOUT.toSeconds(), TimeUnit.SECONDS)) {
        process.descendants().forEach(ProcessHandle::destroyForcibly);
        process.destroyForcibly().waitFor();
        throw new IllegalStateException("the sidecar did not stop within " + STOP_TIMEOUT + ":\n" + log());
      }
      if (process.exitValue() != 0) {
        throw new IllegalStateException("the sidecar exited with " + process.exitValue() + ":\n" + log());
      }
    } catch (InterruptedException interrupted) {
      Thread.currentThread().interrupt();
      process.destroyForcibly();
    } finally {
      deleteRecursively(directory);
    }
  }

  static int freePort() throws IOException {
    try (ServerSocket probe = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      return probe.getLocalPort();
    }
  }

  static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException interrupted) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(interrupted);
    }
  }

  static void deleteRecursively(Path directory) {
    try (Stream<Path> paths = Files.walk(directory)) {
      paths.sorted(Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
    } catch (IOException error) {
      throw new UncheckedIOException(error);
    }
  }
}
