// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ConcordFixture} from "./utils/ConcordFixture.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordEvents} from "../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";

/// @notice join/leave, submit, commit, reveal, phases and the rounds pipeline.
contract RoundsTest is ConcordFixture {
    uint256 internal id;
    bytes32 internal constant M1 = keccak256("m1");

    function setUp() public override {
        super.setUp();
        id = _taskWith(_params(), 10_000e18, 3, 3);
    }

    // --- join / leave -----------------------------------------------------------------------

    function test_JoinCountsMembersAndAssignsValidatorSlots() public view {
        IConcordTypes.TaskState memory st = concord.taskState(id);
        assertEq(st.trainers, 3);
        assertEq(st.validators, 3);
        assertEq(st.validatorSlots, 3);
        assertEq(concord.validatorAt(id, 2), validators[2]);
        IConcordTypes.MemberInfo memory m = concord.memberInfo(id, validators[1]);
        assertTrue(m.joined);
        assertEq(uint8(m.role), uint8(IConcordTypes.Role.Validator));
        assertEq(m.validatorIndex, 1);
        assertEq(concord.nodeInfo(trainers[0]).joinedTasks, 1);
    }

    function test_RevertWhen_JoinTwice() public {
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.AlreadyJoined.selector, id, trainers[0]));
        concord.join(id);
    }

    function test_RevertWhen_JoinUnregistered() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotRegistered.selector, stranger));
        concord.join(id);
    }

    function test_RevertWhen_JoinUnderStaked() public {
        address low = _newNode("low", IConcordTypes.Role.Trainer, 99e18);
        vm.prank(low);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InsufficientStake.selector, low, 99e18, 100e18));
        concord.join(id);
    }

    function test_RevertWhen_MoreThan64Validators() public {
        _makeValidators(64);
        for (uint256 i = 3; i < 64; ++i) {
            vm.prank(validators[i]);
            concord.join(id);
        }
        address late = _newNode("late", IConcordTypes.Role.Validator, STAKE);
        vm.prank(late);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TooManyValidators.selector, id, 64));
        concord.join(id);
    }

    function test_LeaveFreesSlotAndRejoinTakesLowestFree() public {
        vm.startPrank(validators[1]);
        vm.expectEmit(address(concord));
        emit IConcordEvents.Left(id, validators[1], IConcordTypes.Role.Validator);
        concord.leave(id);
        assertEq(concord.taskState(id).validators, 2);
        assertEq(concord.nodeInfo(validators[1]).joinedTasks, 0);
        concord.join(id);
        assertEq(concord.memberInfo(id, validators[1]).validatorIndex, 1);
        assertEq(concord.taskState(id).validatorSlots, 3);
    }

    function test_RevertWhen_LeaveNotJoined() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotJoined.selector, id, stranger));
        concord.leave(id);
    }

    function test_RevertWhen_TrainerLeavesWithUnfinalizedSubmission() public {
        _submit(id, 0, 0, trainers[0], 1);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WorkNotFinalized.selector, id, trainers[0], 0));
        concord.leave(id);
    }

    function test_RevertWhen_ValidatorLeavesWithUnfinalizedCommit() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _commit(id, 0, validators[0], _words(0), M1);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WorkNotFinalized.selector, id, validators[0], 0));
        concord.leave(id);
    }

    function test_LeaveAfterFinalizeThenUnbond() public {
        _playRound(id, 0, 0, 3, _words(3), M1);
        vm.startPrank(trainers[0]);
        concord.leave(id);
        concord.requestUnbond(STAKE);
        vm.warp(block.timestamp + UNBOND_DELAY);
        concord.completeUnbond();
        assertEq(concord.nodeInfo(trainers[0]).stake, 0);
        _assertConserved();
    }

    // --- submit -----------------------------------------------------------------------------

    function test_SubmitStoresRecordAndEmitsDigests() public {
        bytes32 digest = _digest(trainers[1], 0);
        _commitShares(id, 0);
        vm.expectEmit(address(concord));
        emit IConcordEvents.Submitted(id, 0, trainers[1], 0, 0, digest, keccak256(abi.encode("proof", trainers[1])), 42);
        _submit(id, 0, 0, trainers[1], 42);
        (address t, uint32 base, uint64 work) = concord.submissionOf(id, 0, 0);
        assertEq(t, trainers[1]);
        assertEq(base, 0);
        assertEq(work, 42);
        assertEq(concord.roundInfo(id, 0).submissions, 1);
        assertTrue(concord.memberInfo(id, trainers[1]).hasSubmitted);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NoSuchSubmission.selector, id, 0, 1));
        concord.submissionOf(id, 0, 1);
    }

    /// The chain does not refuse a digest it has seen: a copier cannot block the author.
    function test_SubmitAcceptsADigestAlreadySeen() public {
        bytes32 digest = keccak256("same");
        vm.prank(trainers[0]);
        concord.submit(id, 0, 0, digest, bytes32(0), 1);
        vm.prank(trainers[1]);
        concord.submit(id, 0, 0, digest, bytes32(0), 1);
        assertEq(concord.roundInfo(id, 0).submissions, 2);
    }

    function test_SubmitClosesEarlyWhenAllJoinedTrainersSubmitted() public {
        _submit(id, 0, 0, trainers[0], 1);
        _submit(id, 0, 0, trainers[1], 1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Submit));
        vm.expectEmit(address(concord));
        emit IConcordEvents.PhaseClosedEarly(id, 0, IConcordTypes.Phase.Submit);
        _submit(id, 0, 0, trainers[2], 1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Commit));
        assertEq(concord.roundInfo(id, 0).submitEnd, block.timestamp);
    }

    function test_RevertWhen_SubmitTwiceInARound() public {
        _submit(id, 0, 0, trainers[0], 1);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.AlreadySubmitted.selector, id, 0, trainers[0]));
        concord.submit(id, 0, 0, keccak256("other"), bytes32(0), 1);
    }

    function test_RevertWhen_SubmitWrongRound() public {
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WrongRound.selector, id, 0, 1));
        concord.submit(id, 1, 0, keccak256("x"), bytes32(0), 1);
    }

    function test_RevertWhen_SubmitAfterSubmitPhase() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        vm.prank(trainers[0]);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Submit, IConcordTypes.Phase.Commit)
        );
        concord.submit(id, 0, 0, keccak256("x"), bytes32(0), 1);
    }

    function test_RevertWhen_SubmitByNonMember() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotJoined.selector, id, stranger));
        concord.submit(id, 0, 0, keccak256("x"), bytes32(0), 1);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotJoined.selector, id, validators[0]));
        concord.submit(id, 0, 0, keccak256("x"), bytes32(0), 1);
    }

    function test_RevertWhen_SubmitBaseRoundOutOfWindow() public {
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.BaseRoundOutOfWindow.selector, id, 0, 1, 0));
        concord.submit(id, 0, 1, keccak256("x"), bytes32(0), 1);
    }

    function test_RevertWhen_SubmitZeroDigestOrWork() public {
        vm.startPrank(trainers[0]);
        vm.expectRevert(IConcordErrors.ZeroDigest.selector);
        concord.submit(id, 0, 0, bytes32(0), bytes32(0), 1);
        vm.expectRevert(IConcordErrors.ZeroWorkUnits.selector);
        concord.submit(id, 0, 0, keccak256("x"), bytes32(0), 0);
    }

    function test_RevertWhen_SubmitterSlashedBelowMinimum() public {
        // trainer 0 cheats in rounds 0..22 until its stake (1000) falls below 100
        for (uint32 r; r < 23; ++r) {
            _playRound(id, r, r, 1, _oneBit(1, 0), M1);
        }
        uint256 stake = concord.nodeInfo(trainers[0]).stake;
        assertEq(stake, 80e18);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InsufficientStake.selector, trainers[0], stake, 100e18));
        concord.submit(id, 23, 23, keccak256("x"), bytes32(0), 1);
    }

    // --- commit -----------------------------------------------------------------------------

    function test_CommitRecordsAndClosesEarly() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _commit(id, 0, validators[0], _words(0), M1);
        (bool c, bool r) = concord.commitStatus(id, 0, validators[0]);
        assertTrue(c);
        assertFalse(r);
        _commit(id, 0, validators[1], _words(0), M1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Commit));
        vm.expectEmit(address(concord));
        emit IConcordEvents.PhaseClosedEarly(id, 0, IConcordTypes.Phase.Commit);
        _commit(id, 0, validators[2], _words(0), M1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Reveal));
        assertEq(concord.roundInfo(id, 0).commits, 3);
    }

    function test_RevertWhen_CommitDuringSubmit() public {
        vm.prank(validators[0]);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Commit, IConcordTypes.Phase.Submit)
        );
        concord.commit(id, 0, keccak256("c"));
    }

    function test_RevertWhen_CommitPendingRound() public {
        vm.prank(validators[0]);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 1, IConcordTypes.Phase.Commit, IConcordTypes.Phase.Pending)
        );
        concord.commit(id, 1, keccak256("c"));
    }

    function test_RevertWhen_CommitTwice() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _commit(id, 0, validators[0], _words(0), M1);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.AlreadyCommitted.selector, id, 0, validators[0]));
        concord.commit(id, 0, keccak256("again"));
    }

    function test_RevertWhen_CommitByNonValidator() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotJoined.selector, id, trainers[0]));
        concord.commit(id, 0, keccak256("c"));
    }

    function test_RevertWhen_CommitZero() public {
        vm.prank(validators[0]);
        vm.expectRevert(IConcordErrors.ZeroDigest.selector);
        concord.commit(id, 0, bytes32(0));
    }

    // --- check seed (the share rule itself: SeedShares.t.sol) -------------------------------

    /// Once fixed, the seed never changes; later calls answer true and change nothing.
    function test_FixedSeedNeverChanges() public {
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        _fixSeed(id, 0);
        bytes32 seed = concord.checkSeed(id, 0);
        vm.roll(block.number + 1000);
        assertTrue(concord.fixSeed(id, 0));
        assertEq(concord.checkSeed(id, 0), seed);
    }

    function test_RevertWhen_FixSeedInTheSubmitPhase() public {
        _submit(id, 0, 0, trainers[0], 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Commit, IConcordTypes.Phase.Submit
            )
        );
        concord.fixSeed(id, 0);
    }

    function test_RevertWhen_FixSeedOfARoundThatNeverOpened() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IConcordErrors.WrongPhase.selector, id, 5, IConcordTypes.Phase.Commit, IConcordTypes.Phase.Pending
            )
        );
        concord.fixSeed(id, 5);
    }

    /// A validator's verdict must be drawn from the seed everybody sees: no commit before it
    /// (here the shares are committed, not revealed: the seed waits for them until shareEnd).
    function test_RevertWhen_CommitBeforeTheSeedIsFixed() public {
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        bytes32 h = concord.commitHash(id, 0, _words(3), M1, "s", validators[0]);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.SeedNotReady.selector, id, 0, block.timestamp + COMMIT_S / 4));
        concord.commit(id, 0, h);
    }

    /// A round without submissions has nothing to sample: its commits need no seed.
    function test_EmptyRoundCommitsWithoutASeed() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        bytes32 h = concord.commitHash(id, 0, _words(0), M1, "s", validators[0]);
        vm.prank(validators[0]);
        concord.commit(id, 0, h);
        (bool committed,) = concord.commitStatus(id, 0, validators[0]);
        assertTrue(committed);
    }

    // --- reveal -----------------------------------------------------------------------------

    function _toReveal(uint256[] memory words) internal {
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        for (uint256 i; i < 3; ++i) {
            _commit(id, 0, validators[i], words, M1);
        }
    }

    function test_RevealStoresVerdictAndClosesEarly() public {
        uint256[] memory w = _oneBit(3, 2);
        _toReveal(w);
        vm.expectEmit(address(concord));
        emit IConcordEvents.Revealed(id, 0, validators[0], w, M1);
        _reveal(id, 0, validators[0], w, M1);
        (, bool revealed) = concord.commitStatus(id, 0, validators[0]);
        assertTrue(revealed);
        _reveal(id, 0, validators[1], w, M1);
        vm.expectEmit(address(concord));
        emit IConcordEvents.PhaseClosedEarly(id, 0, IConcordTypes.Phase.Reveal);
        _reveal(id, 0, validators[2], w, M1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Finalize));
    }

    function test_RevertWhen_RevealDoesNotMatchCommit() public {
        _toReveal(_words(3));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RevealDoesNotMatchCommit.selector, id, 0, validators[0]));
        concord.reveal(id, 0, _oneBit(3, 0), M1, _salt(validators[0], 0));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RevealDoesNotMatchCommit.selector, id, 0, validators[0]));
        concord.reveal(id, 0, _words(3), keccak256("other"), _salt(validators[0], 0));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RevealDoesNotMatchCommit.selector, id, 0, validators[0]));
        concord.reveal(id, 0, _words(3), M1, keccak256("wrong salt"));
    }

    /// A copied commitment is useless: the hash binds the committing validator.
    function test_RevertWhen_RevealOfACopiedCommitment() public {
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        uint256[] memory w = _words(3);
        bytes32 h = concord.commitHash(id, 0, w, M1, _salt(validators[0], 0), validators[0]);
        _fixSeed(id, 0);
        vm.prank(validators[0]);
        concord.commit(id, 0, h);
        vm.prank(validators[1]);
        concord.commit(id, 0, h);
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        vm.prank(validators[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RevealDoesNotMatchCommit.selector, id, 0, validators[1]));
        concord.reveal(id, 0, w, M1, _salt(validators[0], 0));
    }

    function test_RevertWhen_RevealTwice() public {
        _toReveal(_words(3));
        _reveal(id, 0, validators[0], _words(3), M1);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.AlreadyRevealed.selector, id, 0, validators[0]));
        concord.reveal(id, 0, _words(3), M1, _salt(validators[0], 0));
    }

    function test_RevertWhen_RevealWithoutCommit() public {
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        _commit(id, 0, validators[0], _words(3), M1);
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        vm.prank(validators[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotCommitted.selector, id, 0, validators[1]));
        concord.reveal(id, 0, _words(3), M1, _salt(validators[1], 0));
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotCommitted.selector, id, 0, stranger));
        concord.reveal(id, 0, _words(3), M1, bytes32(0));
    }

    function test_RevertWhen_RevealDuringCommit() public {
        _submit(id, 0, 0, trainers[0], 1);
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _commit(id, 0, validators[0], _words(1), M1);
        vm.prank(validators[0]);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Reveal, IConcordTypes.Phase.Commit)
        );
        concord.reveal(id, 0, _words(1), M1, _salt(validators[0], 0));
    }

    function test_RevertWhen_RevealBitmapWrongLength() public {
        _toReveal(_words(3));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.BitmapLengthMismatch.selector, id, 0, 1, 2));
        concord.reveal(id, 0, new uint256[](2), M1, _salt(validators[0], 0));
    }

    function test_RevertWhen_RevealBitmapBitOutOfRange() public {
        uint256[] memory w = _oneBit(256, 3); // bit 3 of a 3-submission round
        _toReveal(w);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.BitmapBitOutOfRange.selector, id, 0, 3));
        concord.reveal(id, 0, w, M1, _salt(validators[0], 0));
    }

    function test_RevertWhen_RevealZeroModel() public {
        vm.prank(validators[0]);
        vm.expectRevert(IConcordErrors.ZeroDigest.selector);
        concord.reveal(id, 0, _words(0), bytes32(0), bytes32(0));
    }

    // --- pipeline ---------------------------------------------------------------------------

    function test_AsyncZeroRunsRoundsOneAfterAnother() public {
        _submit(id, 0, 0, trainers[0], 1);
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        // round 0 closed its submit phase, but model 1 is not final: round 1 stays pending
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Pending));
        assertEq(concord.currentRound(id), 0);
        vm.prank(trainers[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WrongRound.selector, id, 0, 1));
        concord.submit(id, 1, 1, keccak256("x"), bytes32(0), 1);
    }

    function test_AsyncTwoPipelinesSubmissionsWhileVerifying() public {
        IConcordTypes.TaskParams memory p = _params();
        p.asyncLevel = 2;
        uint256 t = _taskWith(p, 10_000e18, 3, 3);
        // round 0: everyone submits -> submit closes early -> round 1 opens right away
        for (uint256 i; i < 3; ++i) {
            _submit(t, 0, 0, trainers[i], 1);
        }
        assertEq(uint8(concord.phaseOf(t, 1)), uint8(IConcordTypes.Phase.Submit));
        assertEq(concord.currentRound(t), 1);
        // round 1 builds on model 0 (window 1-2..1) while round 0 is in commit
        _submit(t, 1, 0, trainers[0], 1);
        vm.prank(trainers[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.ModelNotFinal.selector, t, 1));
        concord.submit(t, 1, 1, keccak256("x"), bytes32(0), 1);
        _submit(t, 1, 0, trainers[1], 1);
        _submit(t, 1, 0, trainers[2], 1);
        // round 2 opens too (it needs model 0 only); round 3 needs model 1 = round 0 finalized
        _submit(t, 2, 0, trainers[0], 1);
        assertEq(uint8(concord.phaseOf(t, 2)), uint8(IConcordTypes.Phase.Submit));
        // validators verify round 0 while round 2 takes submissions
        for (uint256 i; i < 3; ++i) {
            _commit(t, 0, validators[i], _words(3), M1);
        }
        for (uint256 i; i < 3; ++i) {
            _reveal(t, 0, validators[i], _words(3), M1);
        }
        assertTrue(concord.finalize(t, 0, 100));
        assertEq(uint8(concord.phaseOf(t, 3)), uint8(IConcordTypes.Phase.Pending), "round 2 still submitting");
        vm.warp(block.timestamp + SUBMIT_S);
        assertEq(uint8(concord.phaseOf(t, 3)), uint8(IConcordTypes.Phase.Submit));
        assertEq(concord.roundInfo(t, 3).openAt, block.timestamp);
        assertEq(concord.currentRound(t), 3);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.BaseRoundOutOfWindow.selector, t, 3, 0, 2));
        concord.submit(t, 3, 0, keccak256("x"), bytes32(0), 1);
        _submit(t, 3, 1, trainers[0], 1);
        assertEq(concord.taskState(t).headRound, 3);
    }

    function test_PhasesFollowTimestamps() public {
        uint256 open = block.timestamp;
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Submit));
        vm.warp(open + SUBMIT_S - 1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Submit));
        vm.warp(open + SUBMIT_S);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Commit));
        vm.warp(open + SUBMIT_S + COMMIT_S);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Reveal));
        vm.warp(open + SUBMIT_S + COMMIT_S + REVEAL_S);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Finalize));
        IConcordTypes.RoundInfo memory r = concord.roundInfo(id, 0);
        assertEq(r.openAt, open);
        assertEq(r.submitEnd, open + SUBMIT_S);
        assertEq(r.commitEnd, open + SUBMIT_S + COMMIT_S);
        assertEq(r.revealEnd, open + SUBMIT_S + COMMIT_S + REVEAL_S);
    }

    // --- fuzz -------------------------------------------------------------------------------

    /// Whatever the time, exactly the phase's own action is accepted.
    function testFuzz_OnlyTheCurrentPhaseAcceptsItsAction(uint256 dt) public {
        dt = bound(dt, 0, SUBMIT_S + COMMIT_S + REVEAL_S + 100);
        _submit(id, 0, 0, trainers[0], 1);
        vm.warp(block.timestamp + dt);
        IConcordTypes.Phase phase = concord.phaseOf(id, 0);
        vm.prank(trainers[1]);
        if (phase == IConcordTypes.Phase.Submit) {
            concord.submit(id, 0, 0, keccak256("x"), bytes32(0), 1);
        } else {
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Submit, phase));
            concord.submit(id, 0, 0, keccak256("x"), bytes32(0), 1);
        }
        bytes32 h = concord.commitHash(id, 0, _words(concord.roundInfo(id, 0).submissions), M1, "s", validators[0]);
        if (phase == IConcordTypes.Phase.Commit) _fixSeed(id, 0);
        vm.prank(validators[0]);
        if (phase == IConcordTypes.Phase.Commit) {
            concord.commit(id, 0, h);
        } else {
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Commit, phase));
            concord.commit(id, 0, h);
        }
    }

    /// Any bitmap that fits the round round-trips through commit and reveal; any stray bit
    /// beyond the last submission is refused.
    /// forge-config: default.fuzz.runs = 24
    function testFuzz_RevealBitmapsOfAnyRoundSize(uint256 n, uint256 seed, uint256 stray) public {
        n = bound(n, 1, 520);
        _makeTrainers(n);
        for (uint256 i = 3; i < n; ++i) {
            vm.prank(trainers[i]);
            concord.join(id);
        }
        for (uint256 i; i < n; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        uint256[] memory w = _words(n);
        for (uint256 k; k < w.length; ++k) {
            w[k] = uint256(keccak256(abi.encode(seed, k)));
        }
        if (n % 256 != 0) w[w.length - 1] &= (uint256(1) << (n % 256)) - 1;
        uint256[] memory bad = _words(n);
        bool canStray = n % 256 != 0;
        if (canStray) bad[bad.length - 1] = uint256(1) << bound(stray, n % 256, 255);
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _commit(id, 0, validators[0], w, M1);
        _commit(id, 0, validators[1], bad, M1);
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        _reveal(id, 0, validators[0], w, M1);
        if (canStray) {
            vm.prank(validators[1]);
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.BitmapBitOutOfRange.selector, id, 0, n));
            concord.reveal(id, 0, bad, M1, _salt(validators[1], 0));
        }
    }
}
