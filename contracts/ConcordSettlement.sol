// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IConcordErrors} from "./interfaces/IConcordErrors.sol";
import {IConcordEvents} from "./interfaces/IConcordEvents.sol";
import {IConcordTypes} from "./interfaces/IConcordTypes.sol";
import {ConcordStorage} from "./ConcordStorage.sol";
import {Pipeline} from "./Pipeline.sol";
import {SubmissionWord} from "./libraries/SubmissionWord.sol";

/// @title ConcordSettlement
/// @notice The off-hot-path half of the protocol: registering and staking, task creation,
///         top-up and reclaim, joining and leaving tasks, and paginated finalize (slashing, burns, bounties, validator fees,
///         void rounds, pro-rata rewards). `Concord` deploys one instance in its constructor and
///         delegatecalls it, so this code runs on Concord's storage and tokens; it exists only
///         because the whole protocol does not fit the 24 KiB contract size limit.
/// @dev Shares `ConcordStorage`'s layout with Concord. Called directly (not by delegatecall)
///      every function reverts with `NotDelegated`; it holds no tokens and no state.
///      Functions are documented in IConcord; the wrappers in Concord carry `nonReentrant`.
contract ConcordSettlement is Pipeline {
    using SafeCast for uint256;
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------

    /// @dev Working set of one finalize call (keeps the stack shallow without via-IR).
    struct Fin {
        uint256 taskId;
        uint256 round;
        uint256 ri;
        uint256 n;
        uint256 k;
        uint256[] idx;
        address[] who;
        uint256 acceptedWork;
        uint256 trainerReward;
        uint256 slashAmount;
        uint256 bountyBps;
        uint256 slashed;
        uint256 bounties;
        uint256 paid;
        uint256 decided;
        uint256 burn;
    }

    // ---------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------

    /// @dev This module's own address, to tell a delegatecall from a direct call.
    address private immutable _self;
    /// @dev Placeholder written into fresh ballot slots so the first real commit is a
    ///      non-zero-to-non-zero write.
    bytes32 private constant _SENTINEL = bytes32(uint256(1));

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
    // External: node registry (entry points in NodeRegistry)
    // ---------------------------------------------------------------------------------------

    /// @notice See IConcord.register.
    function register(IConcordTypes.Role role, uint256 amount) external onlyDelegated {
        if (role != IConcordTypes.Role.Trainer && role != IConcordTypes.Role.Validator) revert IConcordErrors.InvalidRole(role);
        if (amount == 0) revert IConcordErrors.ZeroAmount();
        Node storage node = _nodes[msg.sender];
        if (node.role != IConcordTypes.Role.None) revert IConcordErrors.AlreadyRegistered(msg.sender);
        node.role = role;
        node.stake = amount.toUint96();
        _stakedTotal += uint128(amount);
        _accounts[msg.sender].touched = 1;
        emit IConcordEvents.NodeRegistered(msg.sender, role, amount);
        _pullTokens(amount);
    }

    /// @notice See IConcord.addStake.
    function addStake(uint256 amount) external onlyDelegated {
        if (amount == 0) revert IConcordErrors.ZeroAmount();
        Node storage node = _registered(msg.sender);
        uint256 stake = uint256(node.stake) + amount;
        node.stake = stake.toUint96();
        _stakedTotal += uint128(amount);
        emit IConcordEvents.StakeAdded(msg.sender, amount, stake);
        _pullTokens(amount);
    }

    /// @notice See IConcord.completeUnbond.
    function completeUnbond() external onlyDelegated {
        Node storage node = _registered(msg.sender);
        uint256 amount = node.unbonding;
        if (amount == 0) revert IConcordErrors.NothingUnbonding(msg.sender);
        if (node.joinedTasks != 0) revert IConcordErrors.PendingWork(msg.sender, node.joinedTasks);
        if (block.timestamp < node.unbondAt) revert IConcordErrors.UnbondNotReady(msg.sender, node.unbondAt, block.timestamp);
        node.stake -= uint96(amount);
        node.unbonding = 0;
        _stakedTotal -= uint128(amount);
        _creditedTotal += uint128(amount);
        _credit(msg.sender, amount);
        emit IConcordEvents.UnbondCompleted(msg.sender, amount);
    }

    // ---------------------------------------------------------------------------------------
    // External: tasks
    // ---------------------------------------------------------------------------------------

    /// @notice See IConcord.createTask.
    function createTask(IConcordTypes.TaskParams calldata p, uint256 budget)
        external
        onlyDelegated
        returns (uint256 taskId)
    {
        _checkParams(p);
        uint256 perRound = uint256(p.trainerRewardPerRound) + p.validatorFeePerRound;
        if (budget < perRound) revert IConcordErrors.BudgetBelowOneRound(budget, perRound);
        taskId = ++_taskCount;
        _cfg[taskId] = TaskConfig({
            initiator: msg.sender,
            submitSeconds: p.submitSeconds,
            commitSeconds: p.commitSeconds,
            asyncLevel: p.asyncLevel,
            minValidators: p.minValidators,
            bountyBps: p.bountyBps,
            revealSeconds: p.revealSeconds,
            maxRounds: p.maxRounds,
            minTrainerStake: p.minTrainerStake,
            minValidatorStake: p.minValidatorStake,
            trainerReward: p.trainerRewardPerRound,
            validatorFee: p.validatorFeePerRound,
            maxWorkUnits: p.maxWorkUnits,
            slashAmount: p.slashAmount,
            specDigest: p.specDigest
        });
        // Round 0 opens now and reserves its pool.
        _task[taskId] = TaskSlot({
            budget: (budget - perRound).toUint96(),
            head: 0,
            finalized: 0,
            trainers: 0,
            validators: 0,
            validatorSlots: 0,
            resumeAt: 0,
            closed: false
        });
        _model[taskId][0] = p.initialModelDigest;
        _held[taskId] = budget;
        _escrowTotal += budget.toUint128();
        _accounts[msg.sender].touched = 1;
        for (uint256 i; i <= p.asyncLevel; ++i) {
            _times[taskId][i] = RoundTimes({
                round: uint32(i),
                openAt: i == 0 ? uint40(block.timestamp) : 0,
                submitEnd: 0,
                commitEnd: 0,
                revealEnd: 0,
                submissions: 0,
                touched: 1,
                shares: 0
            });
            _votes[taskId][i] = RoundVotes({committed: 0, revealed: 0, acceptedWork: 0, touched: 1});
            _seeds[taskId][i] = RoundSeed({committed: 0, revealed: 0, flagged: 0, touched: 1});
            _mix[taskId][i] = _UNANCHORED;
        }
        emit IConcordEvents.TaskCreated(taskId, msg.sender, p, budget);
        emit IConcordEvents.RoundOpened(taskId, 0, block.timestamp, perRound);
        _pullTokens(budget);
    }

    /// @notice See IConcord.topUp.
    function topUp(uint256 taskId, uint256 amount) external onlyDelegated {
        if (amount == 0) revert IConcordErrors.ZeroAmount();
        TaskConfig storage c = _config(taskId);
        // Open what was due under the old budget first, so new tokens cannot back-date a
        // round's opening.
        TaskSlot memory st = _advance(taskId);
        if (st.closed) revert IConcordErrors.TaskIsClosed(taskId);
        // Money for rounds that can never open would only wait for the initiator's reclaim.
        if (c.maxRounds != 0 && uint256(st.head) + 1 >= c.maxRounds) revert IConcordErrors.NoFurtherRounds(taskId);
        _addBudget(c, st, amount);
        _task[taskId] = st;
        _held[taskId] += amount;
        _escrowTotal += amount.toUint128();
        emit IConcordEvents.TaskToppedUp(taskId, msg.sender, amount, st.budget);
        _pullTokens(amount);
        _advance(taskId);
    }

    /// @notice See IConcord.reclaimBudget.
    function reclaimBudget(uint256 taskId) external onlyDelegated {
        TaskConfig storage c = _config(taskId);
        if (msg.sender != c.initiator) revert IConcordErrors.NotInitiator(taskId, msg.sender);
        TaskSlot storage st = _task[taskId];
        // Over: every round of a maxRounds task settled, or closed with no round in flight
        // (finalized == head + 1). Then no round holds a pool and the budget is all it holds.
        bool ranAll = c.maxRounds != 0 && st.finalized >= c.maxRounds;
        if (!ranAll && !(st.closed && st.finalized > st.head)) revert IConcordErrors.TaskNotOver(taskId);
        uint256 amount = st.budget;
        if (amount == 0) revert IConcordErrors.ZeroAmount();
        st.budget = 0;
        _held[taskId] -= amount;
        _escrowTotal -= uint128(amount);
        _creditedTotal += uint128(amount);
        _credit(msg.sender, amount);
        emit IConcordEvents.BudgetReclaimed(taskId, msg.sender, amount);
    }

    /// @notice See IConcord.closeTask.
    function closeTask(uint256 taskId) external onlyDelegated {
        TaskConfig storage c = _config(taskId);
        if (msg.sender != c.initiator) revert IConcordErrors.NotInitiator(taskId, msg.sender);
        // Rounds already due open first: nodes may be working on them, and views showed them.
        TaskSlot memory st = _advance(taskId);
        if (st.closed) revert IConcordErrors.TaskIsClosed(taskId);
        st.closed = true;
        _task[taskId] = st;
        emit IConcordEvents.TaskClosing(taskId, st.head);
    }

    // ---------------------------------------------------------------------------------------
    // External: membership
    // ---------------------------------------------------------------------------------------

    /// @notice See IConcord.join.
    function join(uint256 taskId) external onlyDelegated {
        TaskConfig storage c = _config(taskId);
        Node storage node = _registered(msg.sender);
        Member memory m = _members[taskId][msg.sender];
        if (m.joined) revert IConcordErrors.AlreadyJoined(taskId, msg.sender);
        IConcordTypes.Role role = node.role;
        uint256 required = role == IConcordTypes.Role.Trainer ? c.minTrainerStake : c.minValidatorStake;
        uint256 active = uint256(node.stake) - node.unbonding;
        if (active < required) revert IConcordErrors.InsufficientStake(msg.sender, active, required);
        // Record due rounds first: joinedRound must be the true head (a validator owes a commit
        // to every round that opens after it joined).
        TaskSlot memory st = _advance(taskId);
        if (st.head < m.rejoinRound) revert IConcordErrors.RejoinCooldown(taskId, msg.sender, m.rejoinRound);
        if (role == IConcordTypes.Role.Trainer) {
            st.trainers += 1;
        } else {
            uint64 used = _slotsInUse[taskId];
            if (used == type(uint64).max) revert IConcordErrors.TooManyValidators(taskId, _MAX_VALIDATORS);
            uint64 free = ~used & (used + 1); // lowest clear bit of `used`
            uint256 slot = _popcount(free - 1);
            _slotsInUse[taskId] = used | free;
            if (slot >= st.validatorSlots) st.validatorSlots = uint8(slot + 1);
            m.validatorIndex = uint8(slot);
            m.hasIndex = true;
            _validatorAt[taskId][slot] = msg.sender;
            bytes32[_RING_MAX] storage ballots = _ballots[taskId][msg.sender];
            if (ballots[0] == bytes32(0)) {
                bytes32[_RING_MAX] storage shares = _shareHashes[taskId][msg.sender];
                for (uint256 i; i <= c.asyncLevel; ++i) {
                    ballots[i] = _SENTINEL;
                    shares[i] = _SENTINEL;
                }
            }
            st.validators += 1;
        }
        _task[taskId] = st;
        m.joined = true;
        m.joinedRound = st.head;
        m.role = role;
        _members[taskId][msg.sender] = m;
        node.joinedTasks += 1;
        emit IConcordEvents.Joined(taskId, msg.sender, role, m.validatorIndex);
    }

    /// @notice See IConcord.leave.
    function leave(uint256 taskId) external onlyDelegated {
        TaskConfig storage c = _config(taskId);
        Member storage m = _members[taskId][msg.sender];
        if (!m.joined) revert IConcordErrors.NotJoined(taskId, msg.sender);
        TaskSlot storage st = _task[taskId];
        uint256 finalized = st.finalized;
        if (m.role == IConcordTypes.Role.Trainer) {
            if (m.hasSubmitted && m.lastSubmitRound >= finalized) {
                revert IConcordErrors.WorkNotFinalized(taskId, msg.sender, m.lastSubmitRound);
            }
            st.trainers -= 1;
        } else {
            uint256 ring = uint256(c.asyncLevel) + 1;
            uint256 bit = uint256(1) << m.validatorIndex;
            for (uint256 r = finalized; r <= st.head; ++r) {
                if ((_votes[taskId][r % ring].committed | _seeds[taskId][r % ring].committed) & bit != 0) {
                    revert IConcordErrors.WorkNotFinalized(taskId, msg.sender, r);
                }
            }
            st.validators -= 1;
            _freeSlot(taskId, m);
        }
        m.joined = false;
        _nodes[msg.sender].joinedTasks -= 1;
        emit IConcordEvents.Left(taskId, msg.sender, m.role);
    }

    // ---------------------------------------------------------------------------------------
    // External: finalize
    // ---------------------------------------------------------------------------------------

    /// @notice See IConcord.finalize.
    function finalize(uint256 taskId, uint32 round, uint256 maxItems) external onlyDelegated returns (bool done) {
        if (maxItems == 0) revert IConcordErrors.ZeroMaxItems();
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _advance(taskId);
        // Only an opened, unsettled round, and only the oldest one: a round number past the
        // head (after the last round, a dry budget or a close) would read a recycled ring slot.
        if (round < st.finalized) revert IConcordErrors.RoundAlreadySettled(taskId, round);
        if (round > st.head) revert IConcordErrors.RoundNotOpened(taskId, round);
        if (round != st.finalized) revert IConcordErrors.WrongRound(taskId, st.finalized, round);
        Fin memory f;
        f.taskId = taskId;
        f.round = round;
        f.ri = round % (uint256(c.asyncLevel) + 1);
        RoundTimes memory tm = _times[taskId][f.ri];
        // Backstop: the live slot must hold this very round.
        if (tm.round != round) revert IConcordErrors.RoundNotOpened(taskId, round);
        IConcordTypes.Phase phase = _livePhase(tm, c);
        if (phase != IConcordTypes.Phase.Finalize) {
            revert IConcordErrors.WrongPhase(taskId, round, IConcordTypes.Phase.Finalize, phase);
        }

        RoundVotes memory v = _votes[taskId][f.ri];
        _loadRevealers(f, v.revealed);
        if (f.k < c.minValidators) {
            _settleVoid(f, c, st, v);
            _burn(f);
            return true;
        }
        f.n = tm.submissions;
        f.acceptedWork = v.acceptedWork;
        f.trainerReward = c.trainerReward;
        f.slashAmount = c.slashAmount;
        f.bountyBps = c.bountyBps;

        RoundSettle memory s = _settle[taskId][f.ri];
        uint256 total = 2 * f.n;
        uint256 to = total - s.cursor > maxItems ? s.cursor + maxItems : total;
        if (to > s.cursor) {
            _runSteps(f, s.cursor, to);
            s.cursor = uint32(to);
            s.trainerPaid += uint96(f.paid);
            s.decided += uint32(f.decided);
            v.acceptedWork = uint96(f.acceptedWork);
            _votes[taskId][f.ri] = v;
            _bookSteps(f);
            emit IConcordEvents.FinalizeProgressed(taskId, round, to, total);
        }
        if (to < total) {
            _settle[taskId][f.ri] = s;
            _burn(f);
            return false;
        }
        _settleRound(f, c, st, v, s);
        _burn(f);
        return true;
    }

    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    function _checkParams(IConcordTypes.TaskParams calldata p) private pure {
        if (p.specDigest == bytes32(0) || p.initialModelDigest == bytes32(0)) revert IConcordErrors.ZeroDigest();
        if (p.submitSeconds == 0 || p.commitSeconds == 0 || p.revealSeconds == 0) revert IConcordErrors.ZeroPhaseLength();
        if (p.commitSeconds < _MIN_COMMIT_SECONDS) {
            revert IConcordErrors.CommitPhaseTooShort(p.commitSeconds, _MIN_COMMIT_SECONDS);
        }
        if (p.asyncLevel > _MAX_ASYNC_LEVEL) revert IConcordErrors.AsyncLevelTooHigh(p.asyncLevel, _MAX_ASYNC_LEVEL);
        if (p.bountyBps > _BPS) revert IConcordErrors.BountyTooHigh(p.bountyBps);
        if (p.minValidators == 0 || p.minValidators > _MAX_VALIDATORS) {
            revert IConcordErrors.MinValidatorsOutOfRange(p.minValidators, _MAX_VALIDATORS);
        }
        if (p.maxWorkUnits == 0) revert IConcordErrors.ZeroWorkUnits();
        // Every later amount derives from these: a round reserves perRound from a uint96 budget,
        // a slash (<= slashAmount, uint96) is split in bounties of at most itself, rewards are
        // trainerReward * workUnits (<= 2^160) / acceptedWork; all fit, so finalize cannot revert.
        uint256 perRound = uint256(p.trainerRewardPerRound) + p.validatorFeePerRound;
        if (perRound > type(uint96).max) revert IConcordErrors.PerRoundTooHigh(perRound, type(uint96).max);
    }

    /// @dev Fill `f.idx` / `f.who` with the revealing validators, in slot-index order.
    function _loadRevealers(Fin memory f, uint64 revealed) private view {
        uint256 k = _popcount(revealed);
        f.k = k;
        f.idx = new uint256[](k);
        f.who = new address[](k);
        uint256 q;
        for (uint256 i; revealed != 0; ++i) {
            if (revealed & 1 != 0) {
                f.idx[q] = i;
                f.who[q] = _validatorAt[f.taskId][i];
                ++q;
            }
            revealed >>= 1;
        }
    }

    /// @dev Finalize steps [from, to): steps 0..n-1 tally submission i (slash it when more
    ///      than half of the revealers rejected it, accept it when fewer than half did, neither
    ///      on a tie; accepted and tied workUnits both join acceptedWork, the denominator);
    ///      steps n..2n-1 pay accepted submission i - n its share of the trainer reward.
    function _runSteps(Fin memory f, uint256 from, uint256 to) private {
        uint256[] memory words = new uint256[](f.k);
        uint256[] memory bounty = new uint256[](f.k);
        uint256 loaded = type(uint256).max;
        for (uint256 i = from; i < to; ++i) {
            uint256 j = i < f.n ? i : i - f.n;
            if (j >> 8 != loaded) {
                loaded = j >> 8;
                for (uint256 q; q < f.k; ++q) {
                    words[q] = _rejects[f.taskId][f.round][f.idx[q]][loaded];
                }
            }
            uint256 bit = j & 255;
            uint256 rejects;
            for (uint256 q; q < f.k; ++q) {
                rejects += (words[q] >> bit) & 1;
            }
            uint256 packed = _subs[f.taskId][f.ri][j];
            // Strict majority rejects (slash), strict minority accepts (pay); a tie does
            // neither, so one sybil of two validators can neither shield nor frame a trainer.
            // A tied claim still counts in the denominator: rejecting honest competitors into
            // ties grows no one's share (its share returns to the budget with the unpaid pool).
            if (i < f.n) {
                if (rejects * 2 > f.k) {
                    _reject(f, j, packed, rejects, words, bounty);
                    ++f.decided;
                } else {
                    f.acceptedWork += SubmissionWord.workUnits(packed);
                    if (rejects * 2 < f.k) {
                        ++f.decided;
                    } else {
                        emit IConcordEvents.SubmissionUndecided(
                            f.taskId, f.round, SubmissionWord.trainer(packed), j, rejects
                        );
                    }
                }
            } else if (rejects * 2 < f.k) {
                address trainer = SubmissionWord.trainer(packed);
                uint256 reward = f.trainerReward * SubmissionWord.workUnits(packed) / f.acceptedWork;
                _credit(trainer, reward);
                f.paid += reward;
                emit IConcordEvents.SubmissionRewarded(f.taskId, f.round, trainer, j, reward);
            }
        }
        for (uint256 q; q < f.k; ++q) {
            if (bounty[q] != 0) {
                _credit(f.who[q], bounty[q]);
                emit IConcordEvents.BountyPaid(f.taskId, f.round, f.who[q], bounty[q]);
            }
        }
    }

    /// @dev Slash the trainer of rejected submission j; its rejecters share bountyBps of the
    ///      slash equally, the rest (division dust included) is burned.
    function _reject(
        Fin memory f,
        uint256 j,
        uint256 packed,
        uint256 rejects,
        uint256[] memory words,
        uint256[] memory bounty
    ) private {
        address trainer = SubmissionWord.trainer(packed);
        uint256 slashed = _slash(trainer, f.slashAmount);
        uint256 share = slashed * f.bountyBps / _BPS / rejects;
        uint256 bit = j & 255;
        for (uint256 q; q < f.k; ++q) {
            if ((words[q] >> bit) & 1 != 0) bounty[q] += share;
        }
        uint256 paid = share * rejects;
        f.slashed += slashed;
        f.bounties += paid;
        f.burn += slashed - paid;
        emit IConcordEvents.SubmissionRejected(f.taskId, f.round, trainer, j, slashed, paid);
    }

    /// @dev Book one finalize call's token moves: slashed stake leaves the stakes, bounties and
    ///      rewards become credited balances, rewards leave the task's escrow; the rest of the
    ///      slashes is burned by `_burn`.
    function _bookSteps(Fin memory f) private {
        _stakedTotal -= uint128(f.slashed);
        _creditedTotal += uint128(f.bounties + f.paid);
        if (f.paid != 0) {
            _escrowTotal -= uint128(f.paid);
            _held[f.taskId] -= f.paid;
        }
    }

    /// @dev Send this call's burn (slashes less bounties; already out of `_stakedTotal`) to the
    ///      burn address: the last thing a finalize call does.
    function _burn(Fin memory f) private {
        if (f.burn == 0) return;
        _burnedTotal += uint128(f.burn);
        emit IConcordEvents.StakeBurned(f.taskId, f.round, f.burn);
        _token.safeTransfer(_BURN_ADDRESS, f.burn);
    }

    /// @dev Last step of a non-void round: model vote, validator fee (only when some submission
    ///      was decided), non-reveal slashes (burned), unspent pool back to the budget, model
    ///      round+1, next rounds opened.
    function _settleRound(
        Fin memory f,
        TaskConfig storage c,
        TaskSlot memory st,
        RoundVotes memory v,
        RoundSettle memory s
    ) private {
        (bytes32 winner, bytes32[] memory digests) = _modelVote(f);
        uint256 feePaid;
        // The fee pays for deciding submissions: a round without any, or with every one tied,
        // pays none (a junk submission tied by a sybil unlocks nothing).
        if (winner != bytes32(0) && s.decided != 0) {
            uint256 winners;
            for (uint256 q; q < f.k; ++q) {
                if (digests[q] == winner) ++winners;
            }
            uint256 share = uint256(c.validatorFee) / winners;
            for (uint256 q; q < f.k; ++q) {
                if (digests[q] == winner) {
                    _credit(f.who[q], share);
                    emit IConcordEvents.ValidatorPaid(f.taskId, f.round, f.who[q], share);
                }
            }
            feePaid = share * winners;
        } else if (winner == bytes32(0)) {
            winner = _model[f.taskId][f.round];
        }
        uint256 slashed = _slashNonRevealers(f, c, v);
        _removeAbsent(f, c, st, v.committed);
        uint256 unpaid = uint256(c.trainerReward) - s.trainerPaid + c.validatorFee - feePaid;
        _stakedTotal -= uint128(slashed);
        f.burn += slashed;
        if (feePaid != 0) {
            _creditedTotal += uint128(feePaid);
            _escrowTotal -= uint128(feePaid);
            _held[f.taskId] -= feePaid;
        }
        _addBudget(c, st, unpaid);
        _closeRound(f, st, winner, false, v.acceptedWork, unpaid);
    }

    /// @dev Void round: no trainer slashed or paid, no fee; non-revealers slashed (burned); the
    ///      pool returns to the budget and the model stays.
    function _settleVoid(Fin memory f, TaskConfig storage c, TaskSlot memory st, RoundVotes memory v) private {
        uint256 slashed = _slashNonRevealers(f, c, v);
        _removeAbsent(f, c, st, v.committed);
        _stakedTotal -= uint128(slashed);
        f.burn += slashed;
        uint256 returned = _perRound(c);
        _addBudget(c, st, returned);
        _closeRound(f, st, _model[f.taskId][f.round], true, 0, returned);
    }

    function _closeRound(
        Fin memory f,
        TaskSlot memory st,
        bytes32 nextModel,
        bool isVoid,
        uint256 acceptedWork,
        uint256 returned
    ) private {
        _model[f.taskId][f.round + 1] = nextModel;
        _settled[f.taskId][f.round] = block.timestamp | (isVoid ? _VOID_FLAG : 0);
        st.finalized = uint32(f.round + 1);
        _task[f.taskId] = st;
        emit IConcordEvents.RoundFinalized(f.taskId, f.round, nextModel, isVoid, acceptedWork, returned);
        _advance(f.taskId);
    }

    /// @dev Plurality of the revealed next-model digests; zero when two digests tie for the
    ///      most votes.
    function _modelVote(Fin memory f) private view returns (bytes32 winner, bytes32[] memory digests) {
        digests = new bytes32[](f.k);
        for (uint256 q; q < f.k; ++q) {
            digests[q] = _ballots[f.taskId][f.who[q]][f.ri];
        }
        uint256 best;
        bool tie;
        for (uint256 q; q < f.k; ++q) {
            uint256 votes;
            for (uint256 p; p < f.k; ++p) {
                if (digests[p] == digests[q]) ++votes;
            }
            if (votes > best) {
                best = votes;
                winner = digests[q];
                tie = false;
            } else if (votes == best && digests[q] != winner) {
                tie = true;
            }
        }
        if (tie) winner = bytes32(0);
    }

    /// @dev A validator that stays joined but does not commit would void rounds for free (the
    ///      commit phase waits for it, reveals fall short of minValidators): every joined
    ///      validator that joined before this round opened, committed nothing in it and holds no
    ///      commitment or seed share in a later live round leaves the task here (slot freed, no
    ///      slash) and may not rejoin before head round round + REJOIN_COOLDOWN_ROUNDS + 1, so a
    ///      squatter cannot finalize and rejoin in one transaction.
    function _removeAbsent(Fin memory f, TaskConfig storage c, TaskSlot memory st, uint64 committed) private {
        uint64 absent = _slotsInUse[f.taskId] & ~committed;
        if (absent == 0) return;
        uint256 ring = uint256(c.asyncLevel) + 1;
        for (uint256 i; absent != 0; ++i) {
            if (absent & 1 != 0) {
                address who = _validatorAt[f.taskId][i];
                Member storage m = _members[f.taskId][who];
                bool keep = m.joinedRound >= f.round;
                for (uint256 r = f.round + 1; !keep && r <= st.head; ++r) {
                    uint256 ri = r % ring;
                    keep = (_votes[f.taskId][ri].committed | _seeds[f.taskId][ri].committed) & uint64(1 << i) != 0;
                }
                if (!keep) {
                    m.joined = false;
                    m.rejoinRound = uint32(f.round + _REJOIN_COOLDOWN_ROUNDS + 1);
                    _freeSlot(f.taskId, m);
                    _nodes[who].joinedTasks -= 1;
                    st.validators -= 1;
                    emit IConcordEvents.ValidatorRemoved(f.taskId, f.round, who);
                }
            }
            absent >>= 1;
        }
    }

    /// @dev Give a departing validator's slot back to the task.
    function _freeSlot(uint256 taskId, Member storage m) private {
        uint256 slot = m.validatorIndex;
        _slotsInUse[taskId] &= ~uint64(1 << slot);
        delete _validatorAt[taskId][slot];
        m.hasIndex = false;
    }

    /// @dev Slash every validator that committed a verdict or a seed share and did not reveal
    ///      it, once even if it withheld both; returns the total taken.
    function _slashNonRevealers(Fin memory f, TaskConfig storage c, RoundVotes memory v)
        private
        returns (uint256 total)
    {
        RoundSeed memory sd = _seeds[f.taskId][f.ri];
        uint64 missing = (v.committed & ~v.revealed) | (sd.committed & ~sd.revealed);
        for (uint256 i; missing != 0; ++i) {
            if (missing & 1 != 0) {
                address validator = _validatorAt[f.taskId][i];
                uint256 taken = _slash(validator, c.slashAmount);
                total += taken;
                emit IConcordEvents.ValidatorSlashed(f.taskId, f.round, validator, taken);
            }
            missing >>= 1;
        }
    }
}
