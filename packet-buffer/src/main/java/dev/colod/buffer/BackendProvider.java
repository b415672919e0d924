package dev.colod.buffer;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.ServiceLoader;

/**
 * One output-commit backend as colod picks it from the configuration ({@code buffer: tap | xdp | nfqueue}):
 * what it needs from the host, how it installs its plumbing around a VM tap (giving the {@link Backend} a ledger
 * opens and the plumbing that closes), and how it puts the host back after an agent that crashed. Providers are
 * found with {@link ServiceLoader}, so a backend in another module (netfilter's) is picked by name the same way.
 */
public interface BackendProvider
{
    /** One NIC as the configuration gives it. {@code netns} null: the agent's own namespace. */
    record NicSpec(String vm, String tap, String bridge, String netns, int queueNum, boolean failOpen)
    {
    }

    /**
     * An installed NIC: the backend for its ledger, the plumbing to close after the ledger (puts the host back),
     * and guest frames the kernel dropped at what a crashed agent left (counted as lost to the restart).
     */
    record Installed(Backend.Factory backend, AutoCloseable plumbing, long droppedMeanwhile)
    {
    }

    /** The name in the configuration. */
    String name();

    /**
     * Whether QEMU must write plain Ethernet frames to the tap ({@code vnet_hdr=off}: no GSO, checksums
     * complete), as a backend that sees raw frames in the kernel (XDP) needs.
     */
    default boolean needsPlainFrames()
    {
        return false;
    }

    /** What this host lacks for the backend, one line each naming it; empty when nothing. */
    List<String> missing();

    /** Installs the plumbing around {@code nic}'s VM tap, recording what it changes in {@code plumbingDir} first. */
    Installed install(NicSpec nic, Path plumbingDir) throws IOException;

    /** Puts back what a crashed agent's plumbing of this kind left (its records in {@code plumbingDir}); one line per repair. */
    List<String> recover(Path plumbingDir) throws IOException;

    /** Every provider on the class path, in a stable order. */
    static List<BackendProvider> all()
    {
        final List<BackendProvider> all = new ArrayList<>();
        ServiceLoader.load(BackendProvider.class, BackendProvider.class.getClassLoader()).forEach(all::add);
        all.sort((a, b) -> a.name().compareTo(b.name()));
        return all;
    }

    /** The provider called {@code name}; refused naming the ones there are. */
    static BackendProvider named(final String name)
    {
        final List<BackendProvider> all = all();
        for (final BackendProvider p : all)
        {
            if (p.name().equals(name))
            {
                return p;
            }
        }
        throw new IllegalArgumentException("no output-commit backend '" + name + "' (there are: " +
            all.stream().map(BackendProvider::name).toList() + ")");
    }
}
