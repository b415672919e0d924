package dev.colod.agent.arbiter;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The gateway's HTTP reading: plain and chunked bodies, a streaming RPC's "result", errors named. */
class EtcdGatewayTest
{
    private static byte[] http(final String s)
    {
        return s.getBytes(StandardCharsets.ISO_8859_1);
    }

    @Test
    void readsPlainAndChunkedBodiesAndUnwrapsResult() throws Exception
    {
        assertThat(EtcdGateway.parse(http("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"ID\":\"7\"}"), "/p").path("ID").asLong())
            .isEqualTo(7);
        final String body = "{\"result\":{\"TTL\":\"2\"}}";
        final String chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + Integer.toHexString(10) + "\r\n" +
            body.substring(0, 10) + "\r\n" + Integer.toHexString(body.length() - 10) + "\r\n" + body.substring(10) +
            "\r\n0\r\n\r\n";
        assertThat(EtcdGateway.parse(http(chunked), "/v3/lease/keepalive").path("TTL").asLong()).isEqualTo(2);
    }

    @Test
    void errorsNameThePathAndWhatCameBack()
    {
        assertThatThrownBy(() -> EtcdGateway.parse(http("HTTP/1.1 404 Not Found\r\n\r\nnot found"), "/v3/kv/txn"))
            .hasMessageContaining("HTTP 404 for /v3/kv/txn: not found");
        assertThatThrownBy(() -> EtcdGateway.parse(http("HTTP/1.1 200 OK\r\n\r\n{\"error\":{\"message\":\"lease not found\"}}"),
            "/v3/lease/keepalive")).hasMessageContaining("lease not found");
        assertThatThrownBy(() -> EtcdGateway.parse(http("SSH-2.0-OpenSSH\r\n"), "/v3/kv/range"))
            .hasMessageContaining("not an HTTP response");
        assertThatThrownBy(() -> EtcdGateway.parse(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), "/p"))
            .hasMessageContaining("bad chunk size 'zz'");
    }
}
