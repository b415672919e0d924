package dev.colod.os;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import dev.colod.os.LibC;

import java.io.IOException;

/** The few socket calls a netlink socket needs, bound by JNA direct mapping; I/O goes through Netty's FileDescriptor. */
public final class Netlink
{
    static
    {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    // linux/socket.h, linux/netlink.h
    public static final int AF_NETLINK = 16;
    public static final int SOCK_RAW = 3;
    public static final int SOCK_NONBLOCK = 0x800;
    public static final int SOCK_CLOEXEC = 0x80000;
    public static final int NETLINK_NETFILTER = 12;
    public static final int SOL_NETLINK = 270;
    public static final int NETLINK_NO_ENOBUFS = 5;

    private Netlink()
    {
    }

    public static native int socket(int domain, int type, int protocol);

    public static native int bind(int fd, byte[] addr, int len);

    public static native int setsockopt(int fd, int level, int name, int[] value, int len);

    public static native int close(int fd);

    /** A bound, non-blocking NETLINK_NETFILTER socket. */
    public static int open() throws IOException
    {
        final int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_NETFILTER);
        if (fd < 0)
        {
            throw new IOException("socket(AF_NETLINK, NETLINK_NETFILTER) failed: " + LibC.lastError());
        }
        // struct sockaddr_nl: u16 family, u16 pad, u32 pid (0: the kernel assigns), u32 groups
        final byte[] addr = new byte[12];
        addr[0] = (byte)AF_NETLINK;
        if (bind(fd, addr, addr.length) < 0)
        {
            final String err = LibC.lastError();
            close(fd);
            throw new IOException("bind(AF_NETLINK) failed: " + err);
        }
        // a full socket buffer must not make the kernel drop our acks silently: report it instead
        setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, new int[]{1}, 4);
        return fd;
    }
}
