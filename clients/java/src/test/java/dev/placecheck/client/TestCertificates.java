package dev.placecheck.client;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A test CA with a server certificate (localhost, 127.0.0.1) and a client certificate (DNS name
 * {@link #CLIENT_IDENTITY}), made with openssl in a directory of their own.
 */
final class TestCertificates {
  static final String CLIENT_IDENTITY = "java-client";

  final Path directory;
  final Path ca;
  final Path serverCertificate;
  final Path serverKey;
  final Path clientCertificate;
  final Path clientKey;

  private TestCertificates(Path directory) {
    this.directory = directory;
    ca = directory.resolve("ca.pem");
    serverCertificate = directory.resolve("server.pem");
    serverKey = directory.resolve("server.key");
    clientCertificate = directory.resolve("client.pem");
    clientKey = directory.resolve("client.key");
  }

  static boolean opensslInstalled() {
    return Files.isExecutable(Path.of("/usr/bin/openssl"));
  }

  static TestCertificates make() throws IOException, InterruptedException {
    TestCertificates made = new TestCertificates(Files.createTempDirectory("placecheck-java-pki-"));
    made.openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=placecheck test CA",
        "-keyout", "ca.key", "-out", "ca.pem");
    Files.writeString(made.directory.resolve("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    Files.writeString(made.directory.resolve("client.ext"),
        "subjectAltName=DNS:" + CLIENT_IDENTITY + "\nextendedKeyUsage=clientAuth\n");
    for (String name : List.of("server", "client")) {
      made.openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout", name + ".key",
          "-out", name + ".csr");
      made.openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
          "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem");
    }
    return made;
  }

  /** Options for mutual TLS with these certificates. */
  ClientOptions.Builder mutualTls() {
    return ClientOptions.builder().trustCertificates(ca).clientCertificate(clientCertificate, clientKey);
  }

  void delete() {
    Sidecar.deleteRecursively(directory);
  }

  private void openssl(String... arguments) throws IOException, InterruptedException {
    List<String> command = new ArrayList<>(List.of("openssl"));
    command.addAll(List.of(arguments));
    Process process = new ProcessBuilder(command).directory(directory.toFile()).redirectErrorStream(true).start();
    String output = new String(process.getInputStream().readAllBytes());
    if (process.waitFor() != 0) {
      throw new IOException(String.join(" ", command) + ":\n" + output);
    }
  }
}
