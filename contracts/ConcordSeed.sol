// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IConcordErrors} from "./interfaces/IConcordErrors.sol";
import {IConcordEvents} from "./interfaces/IConcordEvents.sol";
import {IConcordTypes} from "./interfaces/IConcordTypes.sol";
import {ConcordStorage} from "./ConcordStorage.sol";
import {Pipeline} from "./Pipeline.sol";

/// @title ConcordSeed
/// @notice The check seed and the flags (docs/PROTOCOL.md, "Sampled checks and the check seed"):
///         validators commit seed shares during the submit phase, reveal them after it, the
///         seed is the hash of the shares and a block value fixed when the submit phase closed;
///         validators then publish the failed items of their samples as flags. `Concord`
///         delegatecalls this module (its views through a static self-call), so the code runs
///         on Concord's storage.
/// @dev Shares `ConcordStorage`'s layout with Concord. Called directly (not by delegatecall)
///      every function reverts with `NotDelegated`; it holds no tokens and no state.
///      Functions are documented in IConcord.
contract ConcordSeed is Pipeline {
    // ---------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------

    /// @dev This module's own address, to tell a delegatecall from a direct call.
    address private immutable _self;

    // ---------------------------------------------------------------------------------------
    // Constructor
    // ---------------------------------------------------------------------------------------

    constructor(IERC20 token_) ConcordStorage(token_) {
        _self = address(this);
    }

    modifier onlyDelegated() {
        if (address(this) == _self) revert IConcordErrors.NotDelegated();
        _;
    }

    // ---------------------------------------------------------------------------------------
    // External: shares, the seed, flags
    // ---------------------------------------------------------------------------------------

    /// @notice See IConcord.commitSeedShare.
    function commitSeedShare(uint256 taskId, uint32 round, bytes32 shareHash) external onlyDelegated {
        if (shareHash == bytes32(0)) revert IConcordErrors.ZeroDigest();
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _advance(taskId);
        if (round != st.head) revert IConcordErrors.WrongRound(taskId, st.head, round);
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][ri];
        if (block.timestamp >= _submitEnd(tm, c)) revert IConcordErrors.WrongPhase(taskId, round, IConcordTypes.Phase.Submit, _livePhase(tm, c));
        Member memory m = _members[taskId][msg.sender];
        if (!m.joined || m.role != IConcordTypes.Role.Validator) revert IConcordErrors.NotJoined(taskId, msg.sender);
        uint256 stake = _nodes[msg.sender].stake;
        if (stake < c.minValidatorStake) revert IConcordErrors.InsufficientStake(msg.sender, stake, c.minValidatorStake);
        RoundSeed memory sd = _seeds[taskId][ri];
        uint64 bit = uint64(1) << m.validatorIndex;
        if (sd.committed & bit != 0) revert IConcordErrors.ShareAlreadyCommitted(taskId, round, msg.sender);

        sd.committed |= bit;
        _seeds[taskId][ri] = sd;
        _shareHashes[taskId][msg.sender][ri] = shareHash;
        tm.shares += 1;
        // The last share closes the phase when every trainer already submitted (a round with
        // no submission at all still runs to its deadline, as before shares).
        bool closes = tm.submissions != 0 && tm.submissions >= st.trainers && tm.shares >= st.validators;
        if (closes) {
            tm.submitEnd = uint40(block.timestamp);
            _anchorNow(taskId, ri);
        }
        _times[taskId][ri] = tm;
        emit IConcordEvents.SeedShareCommitted(taskId, round, msg.sender);
        if (closes) emit IConcordEvents.PhaseClosedEarly(taskId, round, IConcordTypes.Phase.Submit);
    }

    /// @notice See IConcord.revealSeedShare.
    function revealSeedShare(uint256 taskId, uint32 round, bytes32 share) external onlyDelegated {
        TaskConfig storage c = _config(taskId);
        (uint256 ri, RoundTimes memory tm) = _inCommitPhase(taskId, c, round);
        uint256 shareEnd = _shareEnd(tm, c);
        if (block.timestamp >= shareEnd) revert IConcordErrors.ShareWindowClosed(taskId, round, shareEnd);
        Member memory m = _members[taskId][msg.sender];
        RoundSeed memory sd = _seeds[taskId][ri];
        uint64 bit = uint64(1) << m.validatorIndex;
        if (!m.hasIndex || sd.committed & bit == 0) revert IConcordErrors.ShareNotCommitted(taskId, round, msg.sender);
        if (sd.revealed & bit != 0) revert IConcordErrors.ShareAlreadyRevealed(taskId, round, msg.sender);
        if (_shareHashes[taskId][msg.sender][ri] != keccak256(abi.encode(share, msg.sender, taskId, uint256(round)))) {
            revert IConcordErrors.ShareDoesNotMatch(taskId, round, msg.sender);
        }
        uint256 mix = _anchored(taskId, round, ri) ^ (uint256(share) & ~_ANCHOR_MASK);
        _mix[taskId][ri] = mix;
        sd.revealed |= bit;
        _seeds[taskId][ri] = sd;
        emit IConcordEvents.SeedShareRevealed(taskId, round, msg.sender, share);
        // Reveals end at shareEnd and the seed is fixed early only once all are in, so it is
        // not fixed yet: the reveal that completes the committed set fixes it.
        if (sd.revealed == sd.committed) _setSeed(taskId, round, mix, sd.revealed);
    }

    /// @notice See IConcord.fixSeed.
    function fixSeed(uint256 taskId, uint32 round) external onlyDelegated returns (bool isFixed) {
        if (_checkSeed[taskId][round] != 0) return true;
        TaskConfig storage c = _config(taskId);
        (uint256 ri, RoundTimes memory tm,) = _pastSubmit(taskId, c, round);
        return _trySeed(taskId, round, ri, tm, c);
    }

    /// @notice See IConcord.flag.
    function flag(uint256 taskId, uint32 round, uint256[] calldata items) external onlyDelegated {
        TaskConfig storage c = _config(taskId);
        (uint256 ri, RoundTimes memory tm) = _inCommitPhase(taskId, c, round);
        uint256 flagEnd = _flagEnd(tm, c);
        if (block.timestamp >= flagEnd) revert IConcordErrors.FlagWindowClosed(taskId, round, flagEnd);
        Member memory m = _members[taskId][msg.sender];
        if (!m.joined || m.role != IConcordTypes.Role.Validator) revert IConcordErrors.NotJoined(taskId, msg.sender);
        if (_checkSeed[taskId][round] == 0 && !_trySeed(taskId, round, ri, tm, c)) {
            revert IConcordErrors.SeedNotReady(taskId, round, _shareEnd(tm, c));
        }
        RoundSeed memory sd = _seeds[taskId][ri];
        uint64 bit = uint64(1) << m.validatorIndex;
        if (sd.flagged & bit != 0) revert IConcordErrors.AlreadyFlagged(taskId, round, msg.sender);
        if (items.length > _MAX_FLAGS) revert IConcordErrors.TooManyFlags(taskId, round, items.length, _MAX_FLAGS);
        for (uint256 i; i < items.length; ++i) {
            uint256 index = uint32(items[i]);
            if (index >= tm.submissions) revert IConcordErrors.NoSuchSubmission(taskId, round, index);
        }
        sd.flagged |= bit;
        _seeds[taskId][ri] = sd;
        emit IConcordEvents.Flagged(taskId, round, msg.sender, items);
    }

    // ---------------------------------------------------------------------------------------
    // Views (run inside Concord's static self-call)
    // ---------------------------------------------------------------------------------------

    /// @notice See IConcord.checkSeed.
    function checkSeed(uint256 taskId, uint32 round) external view onlyDelegated returns (bytes32 seed) {
        seed = _checkSeed[taskId][round];
        if (seed != 0) return seed;
        TaskConfig storage c = _config(taskId);
        RoundTimes memory tm = _times[taskId][round % (uint256(c.asyncLevel) + 1)];
        bool live = tm.round == round && round <= _task[taskId].head && round >= _task[taskId].finalized;
        revert IConcordErrors.SeedNotReady(taskId, round, live ? _shareEnd(tm, c) : 0);
    }

    /// @notice See IConcord.seedInfo.
    function seedInfo(uint256 taskId, uint32 round)
        external
        view
        onlyDelegated
        returns (IConcordTypes.SeedInfo memory info)
    {
        TaskConfig storage c = _config(taskId);
        info.seed = _checkSeed[taskId][round];
        uint256 ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][ri];
        TaskSlot memory st = _task[taskId];
        if (tm.round != round || round > st.head || round < st.finalized) return info;
        RoundSeed memory sd = _seeds[taskId][ri];
        info.sharesCommitted = sd.committed;
        info.sharesRevealed = sd.revealed;
        info.flagged = sd.flagged;
        info.anchorBlock = uint64(_mix[taskId][ri] & _ANCHOR_MASK);
        info.shareEnd = uint40(_shareEnd(tm, c));
        info.flagEnd = uint40(_flagEnd(tm, c));
    }

    // ---------------------------------------------------------------------------------------
    // Internal: the check seed
    // ---------------------------------------------------------------------------------------

    /// @dev Reverts unless `round` is live and past its submit phase; returns its ring index,
    ///      times and phase.
    function _pastSubmit(uint256 taskId, TaskConfig storage c, uint32 round)
        private
        returns (uint256 ri, RoundTimes memory tm, IConcordTypes.Phase phase)
    {
        TaskSlot memory st = _task[taskId];
        if (round > st.head) st = _advance(taskId);
        if (round < st.finalized || round > st.head) {
            revert IConcordErrors.WrongPhase(taskId, round, IConcordTypes.Phase.Commit, _phase(taskId, c, st, round));
        }
        ri = round % (uint256(c.asyncLevel) + 1);
        tm = _times[taskId][ri];
        phase = _livePhase(tm, c);
        if (phase == IConcordTypes.Phase.Submit) {
            revert IConcordErrors.WrongPhase(taskId, round, IConcordTypes.Phase.Commit, phase);
        }
    }

    /// @dev Reverts unless `round` is live and in its commit phase.
    function _inCommitPhase(uint256 taskId, TaskConfig storage c, uint32 round)
        private
        returns (uint256 ri, RoundTimes memory tm)
    {
        IConcordTypes.Phase phase;
        (ri, tm, phase) = _pastSubmit(taskId, c, round);
        if (phase != IConcordTypes.Phase.Commit) {
            revert IConcordErrors.WrongPhase(taskId, round, IConcordTypes.Phase.Commit, phase);
        }
    }

    /// @dev The round's mix word, anchoring the round here when its submit phase ran to the
    ///      deadline and nothing anchored it yet.
    function _anchored(uint256 taskId, uint256 round, uint256 ri) private returns (uint256 mix) {
        mix = _mix[taskId][ri];
        if (mix & _ANCHOR_MASK == 0) {
            mix = _anchorNow(taskId, ri);
            emit IConcordEvents.SeedAnchored(taskId, round, block.number);
        }
    }

    /// @dev Anchor if needed, then fix the seed when every committed share is revealed or
    ///      shareEnd passed; returns whether it is fixed.
    function _trySeed(uint256 taskId, uint256 round, uint256 ri, RoundTimes memory tm, TaskConfig storage c)
        private
        returns (bool)
    {
        uint256 mix = _anchored(taskId, round, ri);
        RoundSeed memory sd = _seeds[taskId][ri];
        if (sd.revealed != sd.committed && block.timestamp < _shareEnd(tm, c)) return false;
        _setSeed(taskId, round, mix, sd.revealed);
        return true;
    }

    function _setSeed(uint256 taskId, uint256 round, uint256 mix, uint64 revealed) private {
        bytes32 seed = keccak256(abi.encode(taskId, round, mix));
        _checkSeed[taskId][round] = seed;
        emit IConcordEvents.CheckSeedFixed(taskId, round, seed, mix & _ANCHOR_MASK, revealed);
    }
}
