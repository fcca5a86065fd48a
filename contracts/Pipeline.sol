// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IConcordEvents} from "./interfaces/IConcordEvents.sol";
import {IConcordTypes} from "./interfaces/IConcordTypes.sol";
import {ConcordStorage} from "./ConcordStorage.sol";

/// @title Pipeline
/// @notice The round clock: which phase a round is in, and when the next round opens.
/// @dev Phases are lazy: nothing has to be "ticked". A round's phase follows from its stored
///      openAt, the phase lengths and any early-close times. Round r + 1 opens once round r's
///      submit phase has closed, model r + 1 - asyncLevel is final, the budget covers a round
///      and maxRounds is not reached; `_advance` records rounds that are due (with the time
///      they became due), and `_simulateHead` answers the same question for views.
abstract contract Pipeline is ConcordStorage {
    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    /// @dev Open (record) the rounds that are due; returns the stored task state afterwards.
    function _advance(uint256 taskId) internal returns (TaskSlot memory st) {
        TaskConfig storage c = _cfg[taskId];
        st = _task[taskId];
        uint256 ring = uint256(c.asyncLevel) + 1;
        uint256 headEnd = _submitEnd(_times[taskId][st.head % ring], c);
        bool changed;
        while (true) {
            (bool due, uint256 openAt) = _nextOpenAt(taskId, c, st, headEnd);
            if (!due) break;
            uint256 next = uint256(st.head) + 1;
            uint256 perRound = _perRound(c);
            uint256 ri = next % ring;
            _times[taskId][ri] = RoundTimes({
                round: uint32(next),
                openAt: uint40(openAt),
                submitEnd: 0,
                commitEnd: 0,
                revealEnd: 0,
                submissions: 0,
                touched: 1,
                shares: 0
            });
            _votes[taskId][ri] = RoundVotes({committed: 0, revealed: 0, acceptedWork: 0, touched: 1});
            _seeds[taskId][ri] = RoundSeed({committed: 0, revealed: 0, flagged: 0, touched: 1});
            _mix[taskId][ri] = _UNANCHORED;
            delete _settle[taskId][ri];
            st.head = uint32(next);
            st.budget -= uint96(perRound); // the pool moves from the budget; _held is unchanged
            headEnd = openAt + c.submitSeconds;
            changed = true;
            emit IConcordEvents.RoundOpened(taskId, next, openAt, perRound);
        }
        if (changed) _task[taskId] = st;
    }

    /// @dev Whether the round after `st.head` can open now, and when it became due: the task
    ///      is not closed, head's submit closed, maxRounds not reached, model (next - asyncLevel) final, budget covers
    ///      a round. openAt = the latest of head's submit end, the finalize of round
    ///      next - asyncLevel - 1 (which made that model final), and resumeAt (the top-up or
    ///      refund that lifted the budget).
    function _nextOpenAt(uint256 taskId, TaskConfig storage c, TaskSlot memory st, uint256 headSubmitEnd)
        internal
        view
        returns (bool due, uint256 openAt)
    {
        if (st.closed || block.timestamp < headSubmitEnd) return (false, 0);
        uint256 next = uint256(st.head) + 1;
        uint256 maxRounds = c.maxRounds;
        if (maxRounds != 0 && next >= maxRounds) return (false, 0);
        uint256 a = c.asyncLevel;
        if (next > uint256(st.finalized) + a) return (false, 0);
        if (st.budget < _perRound(c)) return (false, 0);
        openAt = headSubmitEnd;
        if (next > a) {
            uint256 finalizedAt = uint40(_settled[taskId][next - a - 1]);
            if (finalizedAt > openAt) openAt = finalizedAt;
        }
        if (st.resumeAt > openAt) openAt = st.resumeAt;
        return (true, openAt);
    }

    /// @dev What `_advance` would do now, without writing: the head it would reach (stopping
    ///      early at `stopAt`) and that head's openAt.
    function _simulateHead(uint256 taskId, TaskConfig storage c, TaskSlot memory st, uint256 stopAt)
        internal
        view
        returns (uint256 head, uint256 openAt)
    {
        TaskSlot memory sim = TaskSlot({
            budget: st.budget,
            head: st.head,
            finalized: st.finalized,
            trainers: 0,
            validators: 0,
            validatorSlots: 0,
            resumeAt: st.resumeAt,
            closed: st.closed
        });
        RoundTimes memory tm = _times[taskId][st.head % (uint256(c.asyncLevel) + 1)];
        uint256 headEnd = _submitEnd(tm, c);
        openAt = tm.openAt;
        while (sim.head < stopAt) {
            (bool due, uint256 at) = _nextOpenAt(taskId, c, sim, headEnd);
            if (!due) break;
            sim.head += 1;
            sim.budget -= uint96(_perRound(c));
            headEnd = at + c.submitSeconds;
            openAt = at;
        }
        head = sim.head;
    }

    /// @dev Phase of any round of a task now.
    function _phase(uint256 taskId, TaskConfig storage c, TaskSlot memory st, uint256 round)
        internal
        view
        returns (IConcordTypes.Phase)
    {
        if (round < st.finalized) {
            return _settled[taskId][round] & _VOID_FLAG != 0 ? IConcordTypes.Phase.Void : IConcordTypes.Phase.Finalized;
        }
        if (round <= st.head) return _livePhase(_times[taskId][round % (uint256(c.asyncLevel) + 1)], c);
        (uint256 head, uint256 openAt) = _simulateHead(taskId, c, st, round);
        if (head < round) return IConcordTypes.Phase.Pending;
        RoundTimes memory tm;
        tm.openAt = uint40(openAt);
        return _livePhase(tm, c);
    }

    /// @dev Phase of a live round (finalized <= round <= head) from its stored times.
    function _livePhase(RoundTimes memory tm, TaskConfig storage c) internal view returns (IConcordTypes.Phase) {
        uint256 nowTs = block.timestamp;
        uint256 end = _submitEnd(tm, c);
        if (nowTs < end) return IConcordTypes.Phase.Submit;
        end = tm.commitEnd != 0 ? tm.commitEnd : end + c.commitSeconds;
        if (nowTs < end) return IConcordTypes.Phase.Commit;
        end = tm.revealEnd != 0 ? tm.revealEnd : end + c.revealSeconds;
        if (nowTs < end) return IConcordTypes.Phase.Reveal;
        return IConcordTypes.Phase.Finalize;
    }
}
