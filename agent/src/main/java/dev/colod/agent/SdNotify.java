package dev.colod.agent;

import com.sun.jna.Native;
import com.sun.jna.Platform;

import java.nio.charset.StandardCharsets;

/**
 * systemd's readiness and watchdog protocol ({@code sd_notify(3)}), without libsystemd: one datagram of
 * {@code KEY=VALUE} lines to the AF_UNIX socket named by {@code $NOTIFY_SOCKET} (a path, or an abstract name
 * written with a leading {@code @}). Outside systemd ({@code NOTIFY_SOCKET} unset) every call does nothing. The
 * unit is {@code Type=notify} with {@code WatchdogSec}: colod says {@code READY=1} once its VMs are set up,
 * {@code WATCHDOG=1} while its event loop answers, and {@code STOPPING=1} on SIGTERM.
 */
public final class SdNotify
{
    static
    {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    private static final int AF_UNIX = 1;
    private static final int SOCK_DGRAM = 2;
    private static final int SOCK_CLOEXEC = 0x80000;
    private static final int MSG_NOSIGNAL = 0x4000;
    /** sizeof(struct sockaddr_un): 2 bytes of family, 108 of path. */
    private static final int SOCKADDR_UN = 110;

    private SdNotify()
    {
    }

    private static native int socket(int domain, int type, int protocol);

    private static native long sendto(int fd, byte[] buf, long len, int flags, byte[] addr, int addrLen);

    private static native int close(int fd);

    /** Sends {@code state} to systemd; false when not under systemd or the send failed (never throws). */
    public static boolean notify(final String state)
    {
        return notify(System.getenv("NOTIFY_SOCKET"), state);
    }

    /** Sends {@code state} to the notify socket {@code socket} (a path, or @name); false when it is null or fails. */
    static boolean notify(final String socket, final String state)
    {
        if (socket == null || socket.isEmpty() || (socket.charAt(0) != '/' && socket.charAt(0) != '@'))
        {
            return false;
        }
        final byte[] path = socket.getBytes(StandardCharsets.UTF_8);
        if (path.length >= SOCKADDR_UN - 2)
        {
            return false;
        }
        final byte[] addr = new byte[SOCKADDR_UN];
        addr[0] = AF_UNIX; // sa_family, little-endian
        System.arraycopy(path, 0, addr, 2, path.length);
        int len = 2 + path.length;
        if (path[0] == '@')
        {
            addr[2] = 0; // abstract namespace: no terminating NUL counted
        }
        else
        {
            len++; // the terminating NUL
        }
        final byte[] msg = state.getBytes(StandardCharsets.UTF_8);
        final int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            return false;
        }
        try
        {
            return sendto(fd, msg, msg.length, MSG_NOSIGNAL, addr, len) == msg.length;
        }
        finally
        {
            close(fd);
        }
    }

    /**
     * The watchdog interval systemd asks of this process ({@code WATCHDOG_USEC}, for this pid if
     * {@code WATCHDOG_PID} is set), in microseconds; 0 when there is none.
     */
    public static long watchdogMicros()
    {
        final String pid = System.getenv("WATCHDOG_PID");
        if (pid != null && !pid.equals(Long.toString(ProcessHandle.current().pid())))
        {
            return 0;
        }
        try
        {
            final String usec = System.getenv("WATCHDOG_USEC");
            return usec == null ? 0 : Math.max(0, Long.parseLong(usec.trim()));
        }
        catch (final NumberFormatException ex)
        {
            return 0;
        }
    }
}
