// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IConcord} from "./interfaces/IConcord.sol";
import {Pipeline} from "./Pipeline.sol";
import {SubmissionWord} from "./libraries/SubmissionWord.sol";

/// @title Rounds
/// @notice The round of DESIGN.md section 3 on its hot path: submit, commit, reveal, and the
///         round views. Joining, leaving and the paginated finalize (slashing, burns, bounties,
///         validator fees, void rounds, pro-rata rewards) run in the `ConcordSettlement` module;
///         seed shares, the check seed and flags in the `ConcordSeed` module; their entry points
///         are here. Storage layout: see `ConcordStorage`.
abstract contract Rounds is IConcord, Pipeline {
    // ---------------------------------------------------------------------------------------
    // External: membership
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function join(uint256) external {
        _delegate();
    }

    /// @inheritdoc IConcord
    function leave(uint256) external {
        _delegate();
    }

    /// @inheritdoc IConcord
    function advance(uint256 taskId) external {
        _config(taskId);
        _advance(taskId);
    }

    // ---------------------------------------------------------------------------------------
    // External: the round
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function submit(
        uint256 taskId,
        uint32 round,
        uint32 baseRound,
        bytes32 bundleDigest,
        bytes32 proofRoot,
        uint64 workUnits
    ) external {
        if (bundleDigest == bytes32(0)) revert ZeroDigest();
        if (workUnits == 0) revert ZeroWorkUnits();
        TaskConfig storage c = _config(taskId);
        if (workUnits > c.maxWorkUnits) revert WorkUnitsAboveMax(taskId, workUnits, c.maxWorkUnits);
        TaskSlot memory st = _advance(taskId);
        if (round != st.head) revert WrongRound(taskId, st.head, round);
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][ri];
        if (block.timestamp >= _submitEnd(tm, c)) revert WrongPhase(taskId, round, Phase.Submit, _livePhase(tm, c));
        _admitTrainer(taskId, c, st, round, baseRound);

        uint256 index = tm.submissions;
        _subs[taskId][ri][index] = SubmissionWord.pack(msg.sender, baseRound, workUnits);
        tm.submissions = uint32(index + 1);
        // Early close needs every trainer's submission and every validator's seed share.
        bool closes = tm.submissions >= st.trainers && tm.shares >= st.validators;
        if (closes) {
            tm.submitEnd = uint40(block.timestamp);
            _anchorNow(taskId, ri);
        }
        _times[taskId][ri] = tm;
        emit Submitted(taskId, round, msg.sender, index, baseRound, bundleDigest, proofRoot, workUnits);
        if (closes) emit PhaseClosedEarly(taskId, round, Phase.Submit); // its block is the seed's anchor
    }

    /// @inheritdoc IConcord
    function commitSeedShare(uint256, uint32, bytes32) external {
        _delegateSeed();
    }

    /// @inheritdoc IConcord
    function revealSeedShare(uint256, uint32, bytes32) external {
        _delegateSeed();
    }

    /// @inheritdoc IConcord
    function fixSeed(uint256, uint32) external returns (bool isFixed) {
        return abi.decode(_delegateSeed(), (bool));
    }

    /// @inheritdoc IConcord
    function flag(uint256, uint32, uint256[] calldata) external {
        _delegateSeed();
    }

    /// @inheritdoc IConcord
    function commit(uint256 taskId, uint32 round, bytes32 commitment) external {
        if (commitment == bytes32(0)) revert ZeroDigest();
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _task[taskId];
        if (round > st.head) st = _advance(taskId);
        uint256 ri = _requireLivePhase(taskId, c, st, round, Phase.Commit);
        Member memory m = _members[taskId][msg.sender];
        if (!m.joined || m.role != Role.Validator) revert NotJoined(taskId, msg.sender);
        uint256 stake = _nodes[msg.sender].stake;
        if (stake < c.minValidatorStake) revert InsufficientStake(msg.sender, stake, c.minValidatorStake);
        if (_checkSeed[taskId][round] == 0 && _times[taskId][ri].submissions != 0) {
            revert SeedNotReady(taskId, round, _shareEnd(_times[taskId][ri], c));
        }
        RoundVotes memory v = _votes[taskId][ri];
        uint64 bit = uint64(1) << m.validatorIndex;
        if (v.committed & bit != 0) revert AlreadyCommitted(taskId, round, msg.sender);

        v.committed |= bit;
        _votes[taskId][ri] = v;
        _ballots[taskId][msg.sender][ri] = commitment;
        emit Committed(taskId, round, msg.sender, commitment);
        if (_popcount(v.committed) >= st.validators) {
            _times[taskId][ri].commitEnd = uint40(block.timestamp);
            emit PhaseClosedEarly(taskId, round, Phase.Commit);
        }
    }

    /// @inheritdoc IConcord
    function reveal(uint256 taskId, uint32 round, uint256[] calldata rejectWords, bytes32 nextModelDigest, bytes32 salt)
        external
    {
        if (nextModelDigest == bytes32(0)) revert ZeroDigest();
        (uint256 ri, uint256 vIndex) = _revealSlot(taskId, round);
        _checkBitmap(taskId, round, _times[taskId][ri].submissions, rejectWords);
        if (
            _ballots[taskId][msg.sender][ri]
                != _commitHash(taskId, round, rejectWords, nextModelDigest, salt, msg.sender)
        ) {
            revert RevealDoesNotMatchCommit(taskId, round, msg.sender);
        }
        _recordReveal(taskId, round, ri, vIndex, rejectWords, nextModelDigest);
    }

    /// @inheritdoc IConcord
    function finalize(uint256, uint32, uint256) external returns (bool done) {
        return abi.decode(_delegate(), (bool));
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function memberInfo(uint256 taskId, address node) external view returns (MemberInfo memory) {
        Member memory m = _members[taskId][node];
        return MemberInfo({
            joined: m.joined,
            role: m.role,
            validatorIndex: m.validatorIndex,
            hasSubmitted: m.hasSubmitted,
            lastSubmitRound: m.lastSubmitRound,
            joinedRound: m.joinedRound,
            rejoinRound: m.rejoinRound
        });
    }

    /// @inheritdoc IConcord
    function validatorAt(uint256 taskId, uint256 index) external view returns (address) {
        return _validatorAt[taskId][index];
    }

    /// @inheritdoc IConcord
    function currentRound(uint256 taskId) external view returns (uint32) {
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _task[taskId];
        (uint256 head,) = _simulateHead(taskId, c, st, type(uint256).max);
        return uint32(head);
    }

    /// @inheritdoc IConcord
    function phaseOf(uint256 taskId, uint32 round) external view returns (Phase) {
        TaskConfig storage c = _config(taskId);
        return _phase(taskId, c, _task[taskId], round);
    }

    /// @inheritdoc IConcord
    function roundInfo(uint256 taskId, uint32 round) external view returns (RoundInfo memory info) {
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _task[taskId];
        info.phase = _phase(taskId, c, st, round);
        if (round < st.finalized) {
            info.finalizedAt = uint40(_settled[taskId][round]);
            info.nextModelDigest = _model[taskId][uint256(round) + 1];
        }
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][ri];
        if (round > st.head) {
            if (info.phase == Phase.Pending) return info;
            tm = RoundTimes({
                round: round,
                openAt: 0,
                submitEnd: 0,
                commitEnd: 0,
                revealEnd: 0,
                submissions: 0,
                touched: 1,
                shares: 0
            });
            (, uint256 openAt) = _simulateHead(taskId, c, st, round);
            tm.openAt = uint40(openAt);
        } else if (tm.round != round) {
            return info; // live slot reused by a later round
        }
        info.openAt = tm.openAt;
        uint256 end = tm.submitEnd != 0 ? tm.submitEnd : uint256(tm.openAt) + c.submitSeconds;
        info.submitEnd = uint40(end);
        end = tm.commitEnd != 0 ? tm.commitEnd : end + c.commitSeconds;
        info.commitEnd = uint40(end);
        end = tm.revealEnd != 0 ? tm.revealEnd : end + c.revealSeconds;
        info.revealEnd = uint40(end);
        info.submissions = tm.submissions;
        if (round > st.head) return info;
        RoundVotes memory v = _votes[taskId][ri];
        info.commits = uint8(_popcount(v.committed));
        info.reveals = uint8(_popcount(v.revealed));
        info.acceptedWork = v.acceptedWork;
        info.finalizeCursor = _settle[taskId][ri].cursor;
    }

    /// @inheritdoc IConcord
    function checkSeed(uint256, uint32) external view returns (bytes32) {
        return abi.decode(_seedView(), (bytes32));
    }

    /// @inheritdoc IConcord
    function seedInfo(uint256, uint32) external view returns (SeedInfo memory) {
        return abi.decode(_seedView(), (SeedInfo));
    }

    /// @inheritdoc IConcord
    function burned() external view returns (uint256) {
        return _burnedTotal;
    }

    /// @inheritdoc IConcord
    function submissionOf(uint256 taskId, uint32 round, uint256 index)
        external
        view
        returns (address trainer, uint32 baseRound, uint64 workUnits)
    {
        TaskConfig storage c = _config(taskId);
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][ri];
        if (tm.round != round || round > _task[taskId].head || index >= tm.submissions) {
            revert NoSuchSubmission(taskId, round, index);
        }
        uint256 packed = _subs[taskId][ri][index];
        return (SubmissionWord.trainer(packed), SubmissionWord.baseRound(packed), SubmissionWord.workUnits(packed));
    }

    /// @inheritdoc IConcord
    function commitStatus(uint256 taskId, uint32 round, address validator)
        external
        view
        returns (bool committed, bool revealed)
    {
        TaskConfig storage c = _config(taskId);
        Member memory m = _members[taskId][validator];
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        if (!m.hasIndex || _times[taskId][ri].round != round || round > _task[taskId].head) return (false, false);
        RoundVotes memory v = _votes[taskId][ri];
        uint64 bit = uint64(1) << m.validatorIndex;
        return (v.committed & bit != 0, v.revealed & bit != 0);
    }

    /// @inheritdoc IConcord
    function finalizeCursor(uint256 taskId, uint32 round) external view returns (uint256 cursor, uint256 total) {
        TaskConfig storage c = _config(taskId);
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][ri];
        if (tm.round != round || round > _task[taskId].head) return (0, 0);
        return (_settle[taskId][ri].cursor, 2 * uint256(tm.submissions));
    }

    /// @inheritdoc IConcord
    function commitHash(
        uint256 taskId,
        uint256 round,
        uint256[] calldata rejectWords,
        bytes32 nextModelDigest,
        bytes32 salt,
        address validator
    ) external pure returns (bytes32) {
        return _commitHash(taskId, round, rejectWords, nextModelDigest, salt, validator);
    }

    // ---------------------------------------------------------------------------------------
    // Internal: phases
    // ---------------------------------------------------------------------------------------

    /// @dev Reverts unless `round` is live and in `expected`; returns its ring index.
    function _requireLivePhase(uint256 taskId, TaskConfig storage c, TaskSlot memory st, uint256 round, Phase expected)
        private
        view
        returns (uint256 ri)
    {
        if (round < st.finalized || round > st.head) {
            revert WrongPhase(taskId, round, expected, _phase(taskId, c, st, round));
        }
        ri = round % (uint256(c.asyncLevel) + 1);
        Phase actual = _livePhase(_times[taskId][ri], c);
        if (actual != expected) revert WrongPhase(taskId, round, expected, actual);
    }

    // ---------------------------------------------------------------------------------------
    // Internal: submit
    // ---------------------------------------------------------------------------------------

    /// @dev Checks that the caller may submit to `round` on model `baseRound`, then records
    ///      that it did (one submission per trainer per round).
    function _admitTrainer(uint256 taskId, TaskConfig storage c, TaskSlot memory st, uint32 round, uint32 baseRound)
        private
    {
        Member memory m = _members[taskId][msg.sender];
        if (!m.joined || m.role != Role.Trainer) revert NotJoined(taskId, msg.sender);
        if (m.hasSubmitted && m.lastSubmitRound >= round) revert AlreadySubmitted(taskId, round, msg.sender);
        if (baseRound > round || uint256(baseRound) + c.asyncLevel < round) {
            revert BaseRoundOutOfWindow(taskId, round, baseRound, c.asyncLevel);
        }
        if (baseRound > st.finalized) revert ModelNotFinal(taskId, baseRound);
        uint256 stake = _nodes[msg.sender].stake;
        if (stake < c.minTrainerStake) revert InsufficientStake(msg.sender, stake, c.minTrainerStake);
        m.hasSubmitted = true;
        m.lastSubmitRound = round;
        _members[taskId][msg.sender] = m;
    }

    // ---------------------------------------------------------------------------------------
    // Internal: reveal
    // ---------------------------------------------------------------------------------------

    /// @dev Checks that the caller may reveal for `round` now; returns the round's ring index
    ///      and the caller's validator index.
    function _revealSlot(uint256 taskId, uint32 round) private view returns (uint256 ri, uint256 vIndex) {
        TaskConfig storage c = _config(taskId);
        ri = _requireLivePhase(taskId, c, _task[taskId], round, Phase.Reveal);
        Member memory m = _members[taskId][msg.sender];
        RoundVotes memory v = _votes[taskId][ri];
        uint64 bit = uint64(1) << m.validatorIndex;
        if (!m.hasIndex || v.committed & bit == 0) revert NotCommitted(taskId, round, msg.sender);
        if (v.revealed & bit != 0) revert AlreadyRevealed(taskId, round, msg.sender);
        vIndex = m.validatorIndex;
    }

    /// @dev Store a verified reveal: revealed bit, next-model digest in the ballot ring,
    ///      non-zero reject words; close the reveal phase once every committer revealed.
    function _recordReveal(
        uint256 taskId,
        uint32 round,
        uint256 ri,
        uint256 vIndex,
        uint256[] calldata rejectWords,
        bytes32 nextModelDigest
    ) private {
        RoundVotes memory v = _votes[taskId][ri];
        v.revealed |= uint64(1 << vIndex);
        _votes[taskId][ri] = v;
        _ballots[taskId][msg.sender][ri] = nextModelDigest;
        mapping(uint256 word => uint256) storage words = _rejects[taskId][round][vIndex];
        for (uint256 w; w < rejectWords.length; ++w) {
            if (rejectWords[w] != 0) words[w] = rejectWords[w];
        }
        emit Revealed(taskId, round, msg.sender, rejectWords, nextModelDigest);
        if (v.revealed == v.committed) {
            _times[taskId][ri].revealEnd = uint40(block.timestamp);
            emit PhaseClosedEarly(taskId, round, Phase.Reveal);
        }
    }

    function _checkBitmap(uint256 taskId, uint256 round, uint256 n, uint256[] calldata words) private pure {
        uint256 expected = (n + 255) >> 8;
        if (words.length != expected) revert BitmapLengthMismatch(taskId, round, expected, words.length);
        uint256 used = n & 255;
        if (used != 0 && words[expected - 1] >> used != 0) revert BitmapBitOutOfRange(taskId, round, n);
    }

    function _commitHash(
        uint256 taskId,
        uint256 round,
        uint256[] calldata rejectWords,
        bytes32 nextModelDigest,
        bytes32 salt,
        address validator
    ) private pure returns (bytes32) {
        return keccak256(abi.encode(taskId, round, rejectWords, nextModelDigest, salt, validator));
    }

    // ---------------------------------------------------------------------------------------
    // Internal: the settlement module
    // ---------------------------------------------------------------------------------------

    /// @dev Run the current call's function in the settlement module (see TaskBook._delegate).
    function _delegate() internal virtual returns (bytes memory ret);

    /// @dev Run the current call's function in the seed module.
    function _delegateSeed() internal virtual returns (bytes memory ret);

    /// @dev Answer the current view from the seed module: a static call of this contract to
    ///      itself that delegatecalls the module; its revert data is bubbled up.
    function _seedView() internal view virtual returns (bytes memory ret);
}
