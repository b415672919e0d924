package dev.colod.core;

import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.spi.FrameMirror;
import dev.colod.core.testing.EnginePair;
import org.junit.jupiter.api.Test;

import java.net.Socket;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Hybrid mode's frames channel: what the primary says it reads (its HELLO's shape field on that channel, PROTOCOL.md
 * §10) reaches the secondary's side, which sends TCP records with the copy's window (kind 5) only then.
 */
class FramesChannelFeaturesTest
{
    @Test
    void theSecondaryLearnsThatThePrimaryReadsTcpRecordsWithTheWindow() throws Exception
    {
        final CompletableFuture<Set<String>> said = new CompletableFuture<>();
        final FrameMirror secondarySide = new FrameMirror()
        {
            @Override
            public void attach(final Socket socket, final String peer)
            {
                said.complete(Set.of()); // attached without what the primary said
            }

            @Override
            public void attach(final Socket socket, final String peer, final Set<String> features)
            {
                said.complete(features);
            }

            @Override
            public void detach()
            {
            }
        };
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.HYBRID), 4096,
            ProtocolTap.NONE, ProtocolTap.NONE, Arbiter.NONE, Arbiter.NONE, 0, secondarySide))
        {
            assertThat(said.get(30, TimeUnit.SECONDS)).containsExactly(FrameMirror.FEATURE_TCP_WINDOW);
        }
    }

    @Test
    void anOlderPrimarysEmptyFieldListsNothingAndRepeatsOrExtraSpacesDoNotMatter()
    {
        assertThat(FrameMirror.features(new byte[0])).isEmpty();
        assertThat(FrameMirror.features("tcp-window  later-thing tcp-window ".getBytes()))
            .containsExactlyInAnyOrder("tcp-window", "later-thing");
    }
}
