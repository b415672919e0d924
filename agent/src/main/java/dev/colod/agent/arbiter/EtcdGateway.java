package dev.colod.agent.arbiter;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Locale;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;

/**
 * etcd's v3 JSON gateway (grpc-gateway, {@code POST /v3/...}) over plain HTTP/1.1, one short connection per
 * request on a socket from the agent's transport (so it is made in the right network namespace). Chosen over
 * jetcd, which pulls gRPC and Netty 4.1 parts next to our Netty 4.2 (docs/ARCHITECTURE.md, "Arbiter").
 * Endpoints are tried in order, starting with the last one that answered.
 */
public final class EtcdGateway
{
    public interface SocketFactory
    {
        Socket newSocket() throws IOException;
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int MAX_RESPONSE = 1 << 20;

    private final List<URI> endpoints;
    private final int timeoutMs;
    private final SocketFactory sockets;
    private final SSLContext tls;
    private volatile int preferred;

    /** {@code tls}: for https endpoints (null: http only). */
    EtcdGateway(final List<URI> endpoints, final int timeoutMs, final SocketFactory sockets,
        final SSLContext tls)
    {
        this.endpoints = List.copyOf(endpoints);
        this.timeoutMs = timeoutMs;
        this.sockets = sockets;
        this.tls = tls;
    }

    String endpoints()
    {
        return endpoints.toString();
    }

    static String b64(final String s)
    {
        return Base64.getEncoder().encodeToString(s.getBytes(StandardCharsets.UTF_8));
    }

    static String unb64(final JsonNode n)
    {
        return n == null || n.isNull() ? "" : new String(Base64.getDecoder().decode(n.asText()), StandardCharsets.UTF_8);
    }

    static ObjectNode object()
    {
        return JSON.createObjectNode();
    }

    /** A transaction compare: {@code key}'s create revision equals {@code revision} (0: the key does not exist). */
    static ObjectNode compareCreate(final String key, final long revision)
    {
        return compare(key, "CREATE", "createRevision", revision);
    }

    /** A transaction compare: {@code key}'s last modification revision equals {@code revision} (0: no key). */
    static ObjectNode compareMod(final String key, final long revision)
    {
        return compare(key, "MOD", "modRevision", revision);
    }

    private static ObjectNode compare(final String key, final String target, final String field, final long revision)
    {
        final ObjectNode c = object();
        c.put("key", b64(key));
        c.put("target", target);
        c.put("result", "EQUAL");
        c.put(field, Long.toString(revision));
        return c;
    }

    /** POSTs {@code body} to {@code path} on the first endpoint that answers; throws naming every failure. */
    JsonNode call(final String path, final JsonNode body) throws IOException
    {
        final byte[] payload = JSON.writeValueAsBytes(body);
        final StringBuilder failures = new StringBuilder();
        final int start = preferred;
        for (int i = 0; i < endpoints.size(); i++)
        {
            final int at = (start + i) % endpoints.size();
            final URI e = endpoints.get(at);
            try
            {
                final JsonNode answer = post(e, path, payload);
                preferred = at;
                return answer;
            }
            catch (final IOException ex)
            {
                failures.append(failures.length() == 0 ? "" : "; ").append(e).append(": ").append(ex.getMessage());
            }
        }
        throw new IOException("etcd " + path + " failed on every endpoint: " + failures);
    }

    private JsonNode post(final URI e, final String path, final byte[] payload) throws IOException
    {
        try (Socket plain = sockets.newSocket())
        {
            plain.setTcpNoDelay(true);
            plain.connect(new InetSocketAddress(e.getHost(), e.getPort()), timeoutMs);
            plain.setSoTimeout(timeoutMs);
            final Socket s = "https".equals(e.getScheme()) ? secure(plain, e) : plain;
            final OutputStream out = s.getOutputStream();
            final String head = "POST " + path + " HTTP/1.1\r\nHost: " + e.getHost() + ":" + e.getPort() +
                "\r\nContent-Type: application/json\r\nContent-Length: " + payload.length + "\r\nConnection: close\r\n\r\n";
            out.write(head.getBytes(StandardCharsets.US_ASCII));
            out.write(payload);
            out.flush();
            final byte[] raw = readAll(s.getInputStream());
            return parse(raw, path);
        }
    }

    /** TLS to an https endpoint: the server's certificate must name the endpoint's host. */
    private Socket secure(final Socket plain, final URI e) throws IOException
    {
        if (tls == null)
        {
            throw new IOException("https endpoint but no arbiter CA configured");
        }
        final SSLSocket s = (SSLSocket)tls.getSocketFactory().createSocket(plain, e.getHost(),
            e.getPort(), true);
        final SSLParameters p = s.getSSLParameters();
        p.setEndpointIdentificationAlgorithm("HTTPS");
        s.setSSLParameters(p);
        s.setUseClientMode(true);
        s.startHandshake();
        return s;
    }

    private static byte[] readAll(final InputStream in) throws IOException
    {
        final ByteArrayOutputStream all = new ByteArrayOutputStream();
        final byte[] buf = new byte[8192];
        int n;
        while ((n = in.read(buf)) > 0)
        {
            all.write(buf, 0, n);
            if (all.size() > MAX_RESPONSE)
            {
                throw new IOException("response larger than " + MAX_RESPONSE + " bytes");
            }
        }
        return all.toByteArray();
    }

    static JsonNode parse(final byte[] raw, final String path) throws IOException
    {
        final String text = new String(raw, StandardCharsets.ISO_8859_1);
        final int split = text.indexOf("\r\n\r\n");
        if (split < 0 || !text.startsWith("HTTP/1."))
        {
            throw new IOException("not an HTTP response (" + raw.length + " bytes)");
        }
        final String[] headLines = text.substring(0, split).split("\r\n");
        final String[] status = headLines[0].split(" ", 3);
        boolean chunked = false;
        for (final String h : headLines)
        {
            final String l = h.toLowerCase(Locale.ROOT);
            chunked |= l.startsWith("transfer-encoding:") && l.contains("chunked");
        }
        byte[] body = Arrays.copyOfRange(raw, split + 4, raw.length);
        if (chunked)
        {
            body = dechunk(body);
        }
        final String bodyText = new String(body, StandardCharsets.UTF_8);
        if (status.length < 2 || !"200".equals(status[1]))
        {
            throw new IOException("HTTP " + (status.length > 1 ? status[1] : "?") + " for " + path + ": " +
                bodyText.strip());
        }
        final JsonNode n = JSON.readTree(body);
        // a streaming RPC (lease keep-alive) wraps its one answer in "result"; an error in "error"
        if (n.has("error"))
        {
            throw new IOException("etcd error for " + path + ": " + n.get("error"));
        }
        return n.has("result") ? n.get("result") : n;
    }

    private static byte[] dechunk(final byte[] body) throws IOException
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        int i = 0;
        while (i < body.length)
        {
            int eol = i;
            while (eol + 1 < body.length && !(body[eol] == '\r' && body[eol + 1] == '\n'))
            {
                eol++;
            }
            final String sizeText = new String(body, i, eol - i, StandardCharsets.US_ASCII).split(";")[0].trim();
            final int size;
            try
            {
                size = Integer.parseInt(sizeText, 16);
            }
            catch (final NumberFormatException ex)
            {
                throw new IOException("bad chunk size '" + sizeText + "'");
            }
            if (size == 0)
            {
                break;
            }
            final int from = eol + 2;
            if (from + size > body.length)
            {
                throw new IOException("truncated chunk");
            }
            out.write(body, from, size);
            i = from + size + 2;
        }
        return out.toByteArray();
    }
}
