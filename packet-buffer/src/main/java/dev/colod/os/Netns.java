package dev.colod.os;

import dev.colod.os.LibC;

import java.io.IOException;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.FutureTask;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** Named network namespaces ({@code ip netns}): create, delete, set a sysctl inside, move a thread into one. */
public final class Netns
{
    private Netns()
    {
    }

    public static void add(final String ns) throws IOException
    {
        IpRoute.exec(List.of("ip", "netns", "add", ns));
    }

    /** Deletes the namespace; its virtual devices go with it. Failures are returned, not thrown (cleanup path). */
    public static String delete(final String ns)
    {
        try
        {
            IpRoute.exec(List.of("ip", "netns", "del", ns));
            return null;
        }
        catch (final IOException ex)
        {
            return ex.getMessage();
        }
    }

    public static void sysctl(final String ns, final String setting) throws IOException
    {
        IpRoute.exec(List.of("ip", "netns", "exec", ns, "sysctl", "-qw", setting));
    }

    /** Moves the calling thread into namespace {@code ns} (setns(2)); sockets it creates from now on live there. */
    public static void enter(final String ns) throws IOException
    {
        final int fd = LibC.open("/run/netns/" + ns, LibC.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException("open(/run/netns/" + ns + ") failed: " + LibC.lastError());
        }
        try
        {
            if (LibC.setns(fd, LibC.CLONE_NEWNET) < 0)
            {
                throw new IOException("setns(" + ns + ") failed: " + LibC.lastError());
            }
        }
        finally
        {
            LibC.close(fd);
        }
    }

    /** Runs {@code task} on a fresh thread inside {@code ns} and returns its result (sockets it makes stay there). */
    public static <T> T call(final String ns, final Callable<T> task) throws IOException
    {
        final FutureTask<T> f = new FutureTask<>(() ->
        {
            enter(ns);
            return task.call();
        });
        final Thread t = new Thread(f, "netns-" + ns);
        t.setDaemon(true);
        t.start();
        try
        {
            return f.get(30, TimeUnit.SECONDS);
        }
        catch (final ExecutionException ex)
        {
            if (ex.getCause() instanceof IOException io)
            {
                throw io;
            }
            throw new IOException("in netns " + ns + ": " + ex.getCause(), ex.getCause());
        }
        catch (final InterruptedException | TimeoutException ex)
        {
            throw new IOException("in netns " + ns + ": " + ex, ex);
        }
    }
}
