-- kt1 idle periods (engine on, standing still, at least 60 s), from the best evidence kt1 gives:
--
-- * an asset whose stream carries idling events (eventClass `idle`, eventType `idling`, with
--   details.dateStart / dateEnd) has exactly those periods: the tracker measured them;
-- * otherwise they are derived from telemetry: runs of consecutive reports with the engine on
--   (`active`) and speed 0. A run's true start lies between the last moving report and its
--   first idle report, its end between its last idle report and the next report, so each end
--   is put at the midpoint (the unbiased guess at the report interval's resolution). A silence
--   of over 5 minutes ends a run at the report itself, so a device that stops reporting does
--   not stretch a period.
--
-- Daily by the period's UTC start day: a build reads the telemetry and events of its days and
-- one more either side, and the trips started up to two days before. Which assets send idling
-- events at all is read over every day. A period over 24 h long (or in a trip that began over
-- two days before it) whose far end lands in a rebuilt day, or an asset whose first idling
-- event arrives, changes other days too: a build of those days' partitions covers it.
{{ daily_table('day') }}

{%- set min_idle_s = 60 %}
{%- set max_gap_s = 300 %}

with idling_events as (
    select * from {{ ref('stg_kt1__events') }}
    where event_class = 'idle' and event_type = 'idling'
),

telemetry as (
    select
        asset_id,
        recorded_at,
        is_active,
        speed_kmh,
        lat,
        lon,
        address
    from {{ ref('stg_kt1__telemetry') }}
    where {{ in_days('day', 1, 1) }}
),

trips as (
    select trip_id, source_vehicle_id, started_at, ended_at from {{ ref('int_kt1__trips') }}
    where {{ in_days('started_at', 2, 0) }}
),

idling as (
    select
        source_vehicle_id as asset_id,
        try_cast(json_extract_string(details, '$.dateStart') as timestamptz) as started_at,
        try_cast(json_extract_string(details, '$.dateEnd') as timestamptz) as ended_at,
        lat,
        lon,
        address,
        day
    from idling_events
),

-- The idling events that measured a period (dateStart before dateEnd), on every lake day.
measured_every_day as (
    select * from idling
    where started_at is not null and ended_at > started_at
),

measured as (
    select * from measured_every_day
    where {{ in_days('day', 1, 1) }}
),

event_assets as (
    select distinct asset_id from measured_every_day
),

unmeasured_telemetry as (
    select telemetry.* from telemetry
    anti join event_assets using (asset_id)
),

flagged as (
    select
        *,
        coalesce(is_active and speed_kmh = 0, false) as is_idle,
        lag(recorded_at) over by_time as prev_recorded_at,
        lead(recorded_at) over by_time as next_recorded_at
    from unmeasured_telemetry
    window by_time as (partition by asset_id order by recorded_at)
),

-- Every non-idle report starts a new island; the idle reports after it share its number.
islands as (
    select
        *,
        count(*) filter (where not is_idle) over (
            partition by asset_id order by recorded_at rows unbounded preceding
        ) as island
    from flagged
),

runs as (
    select
        asset_id,
        min(recorded_at) as first_idle_at,
        max(recorded_at) as last_idle_at,
        arg_min(prev_recorded_at, recorded_at) as prev_recorded_at,
        arg_max(next_recorded_at, recorded_at) as next_recorded_at,
        arg_min(lat, recorded_at) as lat,
        arg_min(lon, recorded_at) as lon,
        arg_min(address, recorded_at) as address
    from islands
    where is_idle
    group by asset_id, island
),

derived as (
    select
        asset_id,
        case
            when date_diff('second', prev_recorded_at, first_idle_at) <= {{ max_gap_s }}
                then prev_recorded_at + (first_idle_at - prev_recorded_at) / 2
            else first_idle_at
        end as started_at,
        case
            when date_diff('second', last_idle_at, next_recorded_at) <= {{ max_gap_s }}
                then last_idle_at + (next_recorded_at - last_idle_at) / 2
            else last_idle_at
        end as ended_at,
        lat,
        lon,
        address
    from runs
),

periods as (
    select asset_id, started_at, ended_at, lat, lon, address from measured
    union all
    select asset_id, started_at, ended_at, lat, lon, address from derived
),

long_enough as (
    select *, cast(started_at at time zone 'UTC' as date) as day
    from periods
    where date_diff('millisecond', started_at, ended_at) >= {{ min_idle_s }} * 1000
        and {{ in_days('started_at') }}
),

-- The trip a period starts in (a trip without an end is still going): the latest-started such
-- trip. An ASOF join finds the latest trip started at or before each period; only periods that
-- trip had already ended before (few: trips of one asset seldom overlap) look further back.
-- A plain range join here compared every period with every trip of its asset.
latest_trip as (
    select
        long_enough.*,
        trips.trip_id as latest_trip_id,
        long_enough.started_at <= coalesce(trips.ended_at, long_enough.started_at)
            as in_latest_trip
    from long_enough
    asof left join trips
        on trips.source_vehicle_id = long_enough.asset_id
        and trips.started_at <= long_enough.started_at
),

earlier_trip as (
    select latest_trip.asset_id, latest_trip.started_at, trips.trip_id
    from latest_trip
    inner join trips
        on trips.source_vehicle_id = latest_trip.asset_id
        and trips.started_at <= latest_trip.started_at
        and latest_trip.started_at <= coalesce(trips.ended_at, latest_trip.started_at)
    where not latest_trip.in_latest_trip
    qualify
        row_number() over (
            partition by latest_trip.asset_id, latest_trip.started_at order by trips.started_at desc
        ) = 1
),

final as (
    select
        md5('kt1|' || periods.asset_id || '|' || cast(epoch_us(periods.started_at) as varchar))
            as idle_period_id,
        'kt1' as source,
        periods.asset_id as source_vehicle_id,
        periods.started_at,
        periods.ended_at,
        cast(date_diff('millisecond', periods.started_at, periods.ended_at) / 1000.0 as double)
            as duration_s,
        periods.lat,
        periods.lon,
        periods.address,
        case when periods.in_latest_trip then periods.latest_trip_id else earlier_trip.trip_id end
            as trip_id,
        periods.day
    from latest_trip as periods
    left join earlier_trip
        on earlier_trip.asset_id = periods.asset_id
        and earlier_trip.started_at = periods.started_at
    qualify
        row_number() over (
            partition by periods.asset_id, periods.started_at order by periods.ended_at desc
        ) = 1
)

select * from final
