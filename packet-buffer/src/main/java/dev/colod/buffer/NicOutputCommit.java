package dev.colod.buffer;

import dev.colod.core.spi.OutputCommitListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;

/**
 * The output-commit side of one VM, over all its NICs (each a TAP or NFQUEUE backend): what colo-core's
 * primary engine tells, applied to each NIC.
 */
public final class NicOutputCommit implements OutputCommitListener
{
    private static final Logger LOG = LoggerFactory.getLogger(NicOutputCommit.class);

    private final String vm;
    private final List<OutputCommitNic> nics;

    public NicOutputCommit(final String vm, final List<? extends OutputCommitNic> nics)
    {
        this.vm = vm;
        this.nics = List.copyOf(nics);
    }

    @Override
    public void protectionStarted(final long firstCheckpointId)
    {
        nics.forEach(OutputCommitNic::hold);
        LOG.info("vm={} holding guest output of {} NIC(s) from epoch {}", vm, nics.size(), firstCheckpointId);
    }

    @Override
    public void epochSealed(final long checkpointId)
    {
        for (final OutputCommitNic n : nics)
        {
            n.seal(checkpointId);
        }
    }

    @Override
    public void epochCommitted(final long checkpointId)
    {
        for (final OutputCommitNic n : nics)
        {
            n.release(checkpointId);
        }
    }

    @Override
    public void protectionLost(final String reason)
    {
        nics.forEach(OutputCommitNic::releaseAllAndPass);
        LOG.warn("vm={} released all held output; passing it straight through (unprotected): {}", vm, reason);
    }

    @Override
    public void fenced(final String reason)
    {
        nics.forEach(OutputCommitNic::fence);
        LOG.error("vm={} dropped all held output (fenced): {}", vm, reason);
    }

    public List<NicStats> stats()
    {
        final List<NicStats> out = new ArrayList<>(nics.size());
        for (final OutputCommitNic n : nics)
        {
            out.add(n.stats());
        }
        return out;
    }
}
