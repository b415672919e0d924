package dev.colod.buffer;

import dev.colod.core.spi.OutputCommitListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;

/**
 * The output-commit side of one VM, over all its NICs: what colo-core's primary engine tells, applied to
 * each NIC's epoch buffer.
 */
public final class TapOutputCommit implements OutputCommitListener
{
    private static final Logger LOG = LoggerFactory.getLogger(TapOutputCommit.class);

    private final String vm;
    private final List<TapNic> nics;

    public TapOutputCommit(final String vm, final List<TapNic> nics)
    {
        this.vm = vm;
        this.nics = List.copyOf(nics);
    }

    @Override
    public void protectionStarted(final long firstCheckpointId)
    {
        nics.forEach(TapNic::hold);
        LOG.info("vm={} holding guest output of {} NIC(s) from epoch {}", vm, nics.size(), firstCheckpointId);
    }

    @Override
    public void epochSealed(final long checkpointId)
    {
        for (final TapNic n : nics)
        {
            n.seal(checkpointId);
        }
    }

    @Override
    public void epochCommitted(final long checkpointId)
    {
        for (final TapNic n : nics)
        {
            n.release(checkpointId);
        }
    }

    @Override
    public void protectionLost(final String reason)
    {
        nics.forEach(TapNic::releaseAllAndPass);
        LOG.warn("vm={} released all held output; passing it straight through (unprotected): {}", vm, reason);
    }

    @Override
    public void fenced(final String reason)
    {
        nics.forEach(TapNic::fence);
        LOG.error("vm={} dropped all held output (fenced): {}", vm, reason);
    }

    public List<NicStats> stats()
    {
        final List<NicStats> out = new ArrayList<>(nics.size());
        for (final TapNic n : nics)
        {
            out.add(n.stats());
        }
        return out;
    }
}
