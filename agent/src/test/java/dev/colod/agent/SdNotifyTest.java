package dev.colod.agent;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@link SdNotify} against a real AF_UNIX datagram socket bound as systemd binds its notify socket (a path, and
 * an abstract name): what colod sends is what arrives, and without a socket nothing is sent.
 */
class SdNotifyTest
{
    static
    {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    private static native int socket(int domain, int type, int protocol);

    private static native int bind(int fd, byte[] addr, int len);

    private static native long recv(int fd, byte[] buf, long len, int flags);

    private static native int close(int fd);

    private static final int MSG_DONTWAIT = 0x40;

    @TempDir
    Path dir;

    /** A bound datagram socket at {@code name} (a path, or @abstract). */
    private static int listen(final String name)
    {
        final int fd = socket(1, 2, 0);
        final byte[] addr = new byte[110];
        addr[0] = 1;
        final byte[] p = name.getBytes(StandardCharsets.UTF_8);
        System.arraycopy(p, 0, addr, 2, p.length);
        int len = 2 + p.length + 1;
        if (name.startsWith("@"))
        {
            addr[2] = 0;
            len--;
        }
        assertThat(bind(fd, addr, len)).as("bind " + name).isZero();
        return fd;
    }

    private static String receive(final int fd)
    {
        final byte[] b = new byte[4096];
        final long n = recv(fd, b, b.length, MSG_DONTWAIT);
        return n < 0 ? null : new String(b, 0, (int)n, StandardCharsets.UTF_8);
    }

    @Test
    void readinessAndWatchdogReachSystemdsSocketByPathAndByAbstractName()
    {
        final String path = dir.resolve("notify").toString();
        final int fd = listen(path);
        try
        {
            assertThat(SdNotify.notify(path, "READY=1\nSTATUS=protecting 2 VMs")).isTrue();
            assertThat(receive(fd)).isEqualTo("READY=1\nSTATUS=protecting 2 VMs");
            assertThat(SdNotify.notify(path, "WATCHDOG=1")).isTrue();
            assertThat(receive(fd)).isEqualTo("WATCHDOG=1");
        }
        finally
        {
            close(fd);
        }
        final String abstractName = "@colod-test-" + ProcessHandle.current().pid();
        final int afd = listen(abstractName);
        try
        {
            assertThat(SdNotify.notify(abstractName, "STOPPING=1")).isTrue();
            assertThat(receive(afd)).isEqualTo("STOPPING=1");
        }
        finally
        {
            close(afd);
        }
        assertThat(SdNotify.notify(null, "READY=1")).as("outside systemd: nothing").isFalse();
        assertThat(SdNotify.notify(dir.resolve("nobody").toString(), "READY=1")).as("nobody listens").isFalse();
    }
}
