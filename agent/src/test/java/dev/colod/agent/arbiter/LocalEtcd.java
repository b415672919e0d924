package dev.colod.agent.arbiter;

import dev.colod.os.Netns;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.SSLContext;

/**
 * A one-member etcd (Debian's {@code etcd-server}) for the lab, the demo and tests: started on the given client
 * addresses, optionally inside a network namespace, stopped by its own PID. Not for production, where operators
 * run their own cluster.
 */
public final class LocalEtcd implements AutoCloseable
{
    public static final String BINARY = "/usr/bin/etcd";

    private final Process process;
    private final List<URI> clientUrls;
    private final SSLContext tls;

    private LocalEtcd(final Process process, final List<URI> clientUrls, final SSLContext tls)
    {
        this.process = process;
        this.clientUrls = clientUrls;
        this.tls = tls;
    }

    /**
     * TLS files for a local etcd: it serves https with {@code cert}/{@code key} and requires client certificates
     * from {@code ca}; {@code client} is the context a client uses (its own certificate from the same CA).
     */
    public record Tls(Path ca, Path cert, Path key, SSLContext client)
    {
    }

    /** Null when etcd can run here; otherwise what is missing. */
    public static String missing()
    {
        return Files.isExecutable(Path.of(BINARY)) ? null : BINARY + " not found (Debian package etcd-server)";
    }

    /**
     * Starts etcd listening for clients on {@code clientHosts} at {@code clientPort} (peers on {@code peerPort} of
     * the first), in {@code netns} unless null, with its data in {@code dataDir}; returns once it answers.
     */
    public static LocalEtcd start(final List<String> clientHosts, final int clientPort, final int peerPort,
        final String netns, final Path dataDir, final Path log) throws IOException, InterruptedException
    {
        return start(clientHosts, clientPort, peerPort, netns, dataDir, log, null);
    }

    /** As above; with {@code tls} the client URLs are https and client certificates are required. */
    public static LocalEtcd start(final List<String> clientHosts, final int clientPort, final int peerPort,
        final String netns, final Path dataDir, final Path log, final Tls tls) throws IOException, InterruptedException
    {
        final List<URI> urls = new ArrayList<>();
        for (final String h : clientHosts)
        {
            urls.add(URI.create((tls == null ? "http://" : "https://") + h + ":" + clientPort));
        }
        final String peer = "http://" + clientHosts.get(0) + ":" + peerPort;
        final List<String> cmd = new ArrayList<>();
        if (netns != null)
        {
            cmd.addAll(List.of("ip", "netns", "exec", netns));
        }
        cmd.addAll(List.of(BINARY, "--name", "lab", "--data-dir", dataDir.toString(),
            "--listen-client-urls", String.join(",", urls.stream().map(URI::toString).toList()),
            "--advertise-client-urls", urls.get(0).toString(),
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "lab=" + peer, "--initial-cluster-state", "new", "--log-level", "warn"));
        if (tls != null)
        {
            cmd.addAll(List.of("--cert-file", tls.cert().toString(), "--key-file", tls.key().toString(),
                "--trusted-ca-file", tls.ca().toString(), "--client-cert-auth"));
        }
        Files.createDirectories(dataDir);
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        final LocalEtcd etcd = new LocalEtcd(p, urls, tls == null ? null : tls.client());
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true)
        {
            if (!p.isAlive())
            {
                throw new IOException("etcd exited with " + p.exitValue() + " at start; see " + log);
            }
            if (etcd.answers(netns))
            {
                return etcd;
            }
            if (System.nanoTime() - deadline > 0)
            {
                etcd.close();
                throw new IOException("etcd did not answer on " + urls + " within 30 s; see " + log);
            }
            Thread.sleep(100);
        }
    }

    private boolean answers(final String netns)
    {
        final EtcdGateway g = new EtcdGateway(List.of(clientUrls.get(0)), 1000,
            () -> netns == null ? new Socket() : Netns.call(netns, LocalEtcd::boundSocket), tls);
        try
        {
            g.call("/v3/maintenance/status", EtcdGateway.object());
            return true;
        }
        catch (final IOException ex)
        {
            return false;
        }
    }

    /**
     * A socket whose file descriptor exists already (bound to an ephemeral port): a Java socket is created lazily,
     * so one made inside a namespace must be bound there, or it lands in whatever namespace first uses it.
     */
    public static Socket boundSocket() throws IOException
    {
        final Socket s = new Socket();
        s.bind(new InetSocketAddress(0));
        return s;
    }

    public List<URI> clientUrls()
    {
        return clientUrls;
    }

    public long pid()
    {
        return process.pid();
    }

    public boolean alive()
    {
        return process.isAlive();
    }

    /** Kills etcd (SIGKILL) and waits for it: the lease store is gone. */
    @Override
    public void close()
    {
        process.destroyForcibly();
        try
        {
            process.waitFor(10, TimeUnit.SECONDS);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
    }
}
